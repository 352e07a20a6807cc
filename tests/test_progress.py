"""Progress off a terminal: quiet periodic lines, never one per step."""
import torch

import difflab as dl
from difflab.progress import progress_bar


def _den():
    torch.manual_seed(0)
    net = dl.UNet(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(), groups=4)
    return dl.Denoiser(net, dl.get_schedule("cosine", T=1000), "v")


def _lines(text: str, desc: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.startswith(desc)]


def test_bar_off_a_terminal_writes_a_line_per_quiet_interval(capsys):
    """1000 updates within the quiet interval: the first line and the closing one, nothing between."""
    bar = progress_bar(total=1000, desc="work", quiet_seconds=30.0)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = _lines(capsys.readouterr().err, "work")
    assert 1 <= len(lines) <= 2, lines
    assert "1000/1000" in lines[-1]


def test_training_off_a_terminal_is_quiet_with_either_budget(tmp_path, capsys):
    """A wall-clock budget used to redraw the bar (a full line off a terminal) after every step: a log gained
    one line per step, for hours.  Both budgets now write at most a few lines for a few seconds of training
    (30-second quiet interval), while the run takes dozens of steps."""
    data = dl.load_dataset("digits", index_range="0:64")
    kw = dict(batch_size=4, progress=True, sample_every=0, sample_n=2, sample_steps=2, ckpt_every_minutes=100.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # a tiny network: one thread is faster, and dozens of steps fit even on a busy CPU
    try:
        for name, budget in (("time", dict(minutes=0.1)), ("steps", dict(steps=40))):
            run = dl.train(_den(), data, tmp_path / name, **budget, **kw)
            lines = _lines(capsys.readouterr().err, "training")
            assert run.step >= 10, run.step
            assert 2 <= len(lines) <= 3, (name, run.step, lines)      # the first and the final state at least
            assert f"step={run.step}" in lines[-1], lines
    finally:
        torch.set_num_threads(threads)
