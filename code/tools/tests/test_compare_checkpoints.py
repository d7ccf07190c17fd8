"""compare_checkpoints.py: the paired bootstrap and an end-to-end run on two checkpoints."""
import torch

from tools import compare_checkpoints as cc


def test_paired_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(400, generator=g) < 0.5
    b = a.clone()
    b[:60] = True  # B fixes some of A's mistakes and breaks none
    diff, (low, high) = cc.paired_bootstrap(a, b)
    assert diff == (b.float().mean() - a.float().mean()).item() * 100 > 0
    assert 0 < low < diff < high, "a strictly better model: the interval excludes 0"
    same_diff, (lo, hi) = cc.paired_bootstrap(a, a)
    assert same_diff == 0 and lo == hi == 0


def test_compares_two_checkpoints(demo_data, tmp_path, capsys):
    import main as driver

    for name, seed in (("a", "1"), ("b", "2")):
        driver.main(driver.get_args_parser().parse_args(
            [demo_data, "--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0",
             "--seed", seed, "--log-dir", str(tmp_path / name)]))
    ckpts = [next((tmp_path / n).glob("*/models/model_best.pth.tar")) for n in ("a", "b")]
    cc.main([demo_data, str(ckpts[0]), str(ckpts[1]), "-j", "0", "-o", str(tmp_path / "cmp.md")])
    out = capsys.readouterr().out
    assert "demo set" in out and "95% paired-bootstrap interval" in out
    assert (tmp_path / "cmp.md").read_text().endswith(out.splitlines()[-1] + "\n")
