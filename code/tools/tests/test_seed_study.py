"""seed_study.py: the t quantile, the paired summary, and a real two-row, two-seed study."""
import math
import os

import pytest

from tools import run_experiments as runner
from tools import seed_study
from tools.run_experiments import Experiment

TINY = ("--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0", "-p", "2")


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_student_t_quantile_matches_the_tables(df, expected):
    assert seed_study.student_t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_student_t_quantile_tends_to_the_normal():
    assert seed_study.student_t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)
    assert seed_study.student_t_quantile(0.975, 10000) == pytest.approx(1.95996, abs=1e-3)


def test_summary_of_paired_seeds():
    s = seed_study.summarize([50.0, 60.0, 70.0], [52.0, 64.0, 76.0])
    assert (s["n"], s["mean_a"], s["mean_b"], s["mean_diff"], s["wins_b"]) == (3, 60.0, 64.0, 4.0, 3)
    half = seed_study.student_t_quantile(0.975, 2) * 2.0 / math.sqrt(3)  # sd of (2, 4, 6) is 2
    assert s["interval"] == pytest.approx((4.0 - half, 4.0 + half))
    assert s["interval"][0] < 0 < s["interval"][1], "three seeds of a noisy gain: the interval holds 0"
    one = seed_study.summarize([50.0], [49.0])
    assert one["interval"] is None and one["wins_b"] == 0 and one["sd_a"] == 0.0
    with pytest.raises(ValueError):
        seed_study.summarize([1.0, 2.0], [1.0])


def test_study_trains_each_seed_once_and_reports(demo_data, tmp_path):
    rows = (Experiment("small", "I.2", "SimpleNet", ("--arch", "simplenet", "--lr", "0.01", *TINY), TINY),
            Experiment("big", "I.2", "SimpleNet, higher lr", ("--arch", "simplenet", "--lr", "0.05", *TINY), TINY))
    acc, pgd, data_label, hardware, code = seed_study.run_study(rows, [3, 4], [1, 1], "demo", demo_data, str(tmp_path))
    log_root = tmp_path / "logs" / "demo" / "seeds"
    assert sorted(os.listdir(log_root)) == ["big-e1-seed3", "big-e1-seed4", "small-e1-seed3", "small-e1-seed4"]
    for name in ("small", "big"):
        for i, seed in enumerate((3, 4)):
            status = runner.read_status(str(log_root / f"{name}-e1-seed{seed}"))
            assert status["args"][-2:] == ["--seed", str(seed)] and status["status"] == "finished"
            assert acc[name][i] == seed_study.best_top1(str(log_root), f"{name}-e1-seed{seed}")
    assert all(0 <= a <= 100 for a in acc["small"] + acc["big"])
    assert acc["small"][0] != acc["small"][1] or acc["big"][0] != acc["big"][1], "seeds change the runs"
    text = seed_study.write_report(str(tmp_path / "results" / "demo"), rows, [3, 4], [1, 1], acc, data_label,
                                   hardware, "demo")
    assert "demo set" in data_label and "Data: demo set" in text and "CPU" in text
    assert "small for 1 epochs and big for 1, the same number of epochs" in text and "--epochs 1 1`" in text
    assert f"| 3 | {acc['small'][0]:.2f} / {acc['big'][0]:.2f} |" in text and "better in" in text
    assert (tmp_path / "results" / "demo" / "seeds_small_vs_big_e1-1.csv").read_text().count("\n") == 3
    before = (log_root / "small-e1-seed3" / "stdout.log").read_text()
    again, *_ = seed_study.run_study(rows, [3, 4], [1, 1], "demo", demo_data, str(tmp_path))
    assert again == acc and (log_root / "small-e1-seed3" / "stdout.log").read_text() == before, "nothing retrained"


def test_the_main_seed_is_the_runners_run_and_every_run_is_attacked(demo_data, tmp_path, monkeypatch):
    rows = (Experiment("small", "I.2", "SimpleNet", ("--arch", "simplenet", "--lr", "0.01", *TINY), TINY),
            Experiment("big", "I.2", "SimpleNet, higher lr", ("--arch", "simplenet", "--lr", "0.05", *TINY), TINY))
    attacks = tuple(Experiment(f"pgd-{r.name}", "III", "PGD", ("-a", "-v", "--attack-eps", "0.5", "-j", "0"), ("-a",),
                               target=r.name) for r in rows)
    monkeypatch.setattr(runner, "EXPERIMENTS", (rows[0], attacks[0], rows[1], attacks[1]))
    monkeypatch.setattr(runner, "ATTACK_DEMO", ("-j", "0"))
    own = runner.run_all(runner.EXPERIMENTS, "demo", demo_data, str(tmp_path / "logs" / "demo"))
    assert {s["status"] for s in own.values()} == {"finished"}
    seed = seed_study.main_seed()
    settings = [(0.5, 10), (1.0, 2)]
    acc, pgd, _, _, code = seed_study.run_study(rows, [seed, 3], [1, 1], "demo", demo_data, str(tmp_path),
                                                attacks=settings)
    assert sorted(os.listdir(tmp_path / "logs" / "demo" / "seeds")) == [
        "big-e1-seed3", "pgd-big-e1-seed3-eps0.5-steps10", "pgd-big-e1-seed3-eps1-steps2",
        "pgd-small-e1-seed3-eps0.5-steps10", "pgd-small-e1-seed3-eps1-steps2", "small-e1-seed3"], \
        "seed 3 only: 2024 is the runner's"
    for name in ("small", "big"):
        assert acc[name][0] == seed_study.best_top1(str(tmp_path / "logs" / "demo"), name), "the runner's own run"
        assert pgd[name][0.5, 10][0] == own[f"pgd-{name}"]["acc1"], "the runner's own attack of the same settings"
        extra = runner.read_status(str(tmp_path / "logs" / "demo" / f"pgd-{name}-eps1-steps2"))
        assert extra["epsilon"] == 1.0 and extra["num_steps"] == 2 and pgd[name][1.0, 2][0] == extra["acc1"], \
            "an attack the runner lacks runs beside the runner's own runs"
        for eps, steps in settings:
            attack = runner.read_status(str(tmp_path / "logs" / "demo" / "seeds" /
                                            f"pgd-{name}-e1-seed3-eps{eps:g}-steps{steps}"))
            assert attack["status"] == "finished" and (attack["epsilon"], attack["num_steps"]) == (eps, steps)
            assert pgd[name][eps, steps][1] == attack["acc1"]
    assert code.endswith("(4 runs)"), "each training run's code version counted"
    text = seed_study.write_report(str(tmp_path / "results" / "demo"), rows, [seed, 3], [1, 1], acc, "demo set", "CPU",
                                   "demo", pgd, code)
    assert f"--seeds {seed} 3 --epochs 1 1 --attack 0.5 10 --attack 1 2`" in text and f"Code: {code}. Top-1 is" in text
    assert ("| seed | clean: small / big (%) | PGD epsilon 0.5, 10 steps: small / big (%) | "
            "PGD epsilon 1, 2 steps: small / big (%) |") in text
    csv_path = tmp_path / "results" / "demo" / "seeds_small_vs_big_e1-1.csv"
    assert csv_path.read_text().splitlines()[0] == "seed,epsilon,steps,small_top1,big_top1,difference"
    (a, b), seeds, measures = seed_study.read_report(str(csv_path))
    assert (a, b, seeds) == ("small", "big", [seed, 3])
    assert measures[None] == (pytest.approx(acc["small"]), pytest.approx(acc["big"]))
    assert measures[1.0, 2] == (pytest.approx(pgd["small"][1.0, 2]), pytest.approx(pgd["big"][1.0, 2]))


def test_attacks_are_parsed_and_checked():
    assert seed_study.parse_attacks([("0.5", "10"), ("1", "3")], None) == [(0.5, 10), (1.0, 3)]
    assert seed_study.parse_attacks([], 0.25) == [(0.25, 10)], "--attack-eps: PGDAttack's default steps"
    for pairs in ([("x", "3")], [("0.5", "2.5")], [("0", "3")], [("0.5", "0")], [("0.5", "3"), ("0.50", "3")]):
        with pytest.raises(runner.RunnerError):
            seed_study.parse_attacks(pairs, None)


def test_command_line_refuses_attack_rows_and_repeated_seeds(tmp_path, capsys):
    for argv in (["--demo", "simplenet", "pgd-simplenet"], ["--demo", "simplenet", "simplenet-chain"],
                 ["--demo", "simplenet", "nosuchrow"],
                 ["--demo", "simplenet", "cnn", "--seeds", "1", "1"], ["--demo", "cnn", "cnn"],
                 ["--demo", "simplenet", "cnn", "--epochs-factor", "0"],
                 ["--demo", "simplenet", "cnn", "--epochs", "0", "4"],
                 ["--demo", "simplenet", "cnn", "--attack", "0.5", "many"]):
        with pytest.raises(SystemExit) as e:
            seed_study.main([*argv, "--root", str(tmp_path), "--data", str(tmp_path / "data")])
        assert e.value.code == 2 and capsys.readouterr().err.startswith("error: "), argv
    assert not os.path.exists(tmp_path / "logs"), "refused before anything ran"


def test_runs_are_named_by_their_epochs_at_the_chosen_scale():
    row = Experiment("cnn", "I.2", "CNN", ("--arch", "cnn", "--epochs", "4", "--lr", "0.05"), ("--epochs", "60"))
    same = seed_study.seeded(row, 7, 4, "demo")
    assert same.name == "cnn-e4-seed7" and same.demo == (*row.demo, "--seed", "7")
    assert same.full == ("--epochs", "60", "--seed", "7")
    more = seed_study.seeded(row, 7, 8, "demo")
    assert more.name == "cnn-e8-seed7"
    assert more.demo == ("--arch", "cnn", "--epochs", "8", "--lr", "0.05", "--seed", "7")
    full = seed_study.seeded(row, 7, 120, "full")
    assert full.name == "cnn-e120-seed7" and full.full == ("--epochs", "120", "--seed", "7")
    assert full.demo == same.demo


def test_report_states_the_budget(tmp_path):
    rows = (Experiment("a", "I.2", "A", ("--epochs", "10"), ("--epochs", "60")),
            Experiment("b", "I.2", "B", ("--epochs", "4"), ("--epochs", "60")))
    acc = {"a": [50.0, 60.0], "b": [55.0, 58.0]}
    for epochs, said in (([10, 4], "the epochs of run_experiments.py's table"),
                         ([20, 8], "2 times the epochs of run_experiments.py's table"),
                         ([10, 8], "1 and 2 times the epochs of run_experiments.py's table"),
                         ([8, 8], "the same number of epochs")):
        text = seed_study.write_report(str(tmp_path), rows, [1, 2], epochs, acc, "demo set", "CPU", "demo")
        assert f"a for {epochs[0]} epochs and b for {epochs[1]}, {said} (" in text
        assert (tmp_path / f"seeds_a_vs_b_e{epochs[0]}-{epochs[1]}.md").read_text() == text


def test_report_reads_every_study_of_a_pair_in_order_of_epochs(tmp_path):
    from tools import build_report

    out = tmp_path / "demo"
    rows = (Experiment("a", "I.2", "A", ("--epochs", "10"), ("--epochs", "60")),
            Experiment("b", "I.2", "B", ("--epochs", "4"), ("--epochs", "60")))
    for k, epochs in enumerate(([20, 8], [10, 4], [10, 8])):
        seed_study.write_report(str(out), rows, [1, 2], epochs, {"a": [50.0, 60.0], "b": [51.0 + k, 63.0 + k]},
                                "demo set", f"CPU {k}", "demo")
    for name in ("seeds_a_vs_bc_e1-1.csv", "seeds_b_vs_a_e1-1.csv", "seeds_a_vs_b.csv"):
        (out / name).write_text("seed,a_top1,b_top1,difference\n")
    ctx = build_report.Context(str(tmp_path), str(tmp_path), {"demo": {}})
    studies = build_report.seed_studies(ctx, "demo", "a", "b")
    assert [s["epochs"] for s in studies] == [(10, 4), (10, 8), (20, 8)]
    assert [s["hardware"] for s in studies] == ["CPU 1", "CPU 2", "CPU 0"] and studies[0]["data"] == "demo set"
    assert studies[0]["mean_diff"] == seed_study.summarize([50.0, 60.0], [52.0, 64.0])["mean_diff"] == 3.0
    assert studies[0]["path"] == str(out / "seeds_a_vs_b_e10-4.md")
