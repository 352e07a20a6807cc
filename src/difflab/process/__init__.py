"""Schedules and the forward process."""
from .forward import (expand, markov_chain, posterior, posterior_coefficients, q_sample, q_step, transition,
                      transition_coefficients)
from .proposals import T_PROPOSALS, logit_normal_density, propose_t
from .schedules import (SCHEDULES, CosineSchedule, DiscreteSchedule, EDMSchedule, FlowSchedule, LinearSchedule,
                        ScaledLinearSchedule, Schedule, SigmoidSchedule, VEGeometricSchedule, VPSchedule,
                        ZeroTerminalSNR, get_schedule, schedule_from_config, schedule_from_spec,
                        zero_terminal_snr_table)

__all__ = [
    "SCHEDULES", "CosineSchedule", "DiscreteSchedule", "EDMSchedule", "FlowSchedule", "LinearSchedule",
    "ScaledLinearSchedule", "Schedule", "SigmoidSchedule", "VEGeometricSchedule", "VPSchedule",
    "ZeroTerminalSNR", "get_schedule", "schedule_from_config", "schedule_from_spec", "zero_terminal_snr_table",
    "expand", "markov_chain", "posterior", "posterior_coefficients", "q_sample", "q_step", "transition",
    "transition_coefficients", "T_PROPOSALS", "propose_t", "logit_normal_density",
]
