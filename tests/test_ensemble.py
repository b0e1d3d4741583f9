"""Ensembles: the combination maths, ECE, SAMME, soups and SWA (unit), and ensemble folders of real runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.ensemble import combine as C
from transferkit.errors import ConfigError, DataError
from transferkit.evaluate.metrics import expected_calibration_error


# --- ECE ----------------------------------------------------------------------------------------------------------
def test_ece_matches_a_hand_computation():
    # confidences 0.9, 0.8 (bin (0.8, 0.9] and (0.7, 0.8] with 10 bins), 0.6, 0.55 (bin (0.5, 0.6])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1])  # right, wrong, right, right
    # bins: {0.9: right} -> |1 - 0.9| = 0.1 ; {0.8: wrong} -> |0 - 0.8| = 0.8 ; {0.6, 0.55: both right} -> |1 - 0.575|
    hand = 0.25 * 0.1 + 0.25 * 0.8 + 0.5 * (1 - 0.575)
    assert expected_calibration_error(y, proba, n_bins=10) == pytest.approx(hand)
    # one bin: |accuracy - mean confidence|
    assert expected_calibration_error(y, proba, n_bins=1) == pytest.approx(abs(0.75 - np.mean([0.9, 0.8, 0.6, 0.55])))


def test_ece_of_an_always_sure_half_right_model_is_one_half():
    proba = np.tile([[1.0, 0.0]], (10, 1))
    y = np.array([0, 1] * 5)
    assert expected_calibration_error(y, proba) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(y, proba, n_bins=0)


# --- combining ----------------------------------------------------------------------------------------------------
def test_average_vote_and_disagreement_by_hand():
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    b = np.array([[0.6, 0.4], [0.8, 0.2], [0.1, 0.9]])
    c = np.array([[0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    np.testing.assert_allclose(C.average([a, b]), (a + b) / 2)
    np.testing.assert_allclose(C.average([a, b], [3, 1]), (3 * a + b) / 4)
    v = C.vote([a, b, c])
    assert list(v.argmax(1)) == [0, 1, 1]  # votes 2:1, 1:2, 1:2
    np.testing.assert_allclose(v[0], [2 / 3, 1 / 3], atol=1e-5)
    assert C.vote([a, b, c], [1, 1, 5]).argmax(1).tolist() == [1, 1, 1]  # c outweighs the others
    # top classes a = [0, 1, 0], b = [0, 0, 1], c = [1, 1, 1]: each pair differs on 2 of 3 rows
    assert C.disagreement([a, b, c]) == pytest.approx(2 / 3)
    assert C.disagreement([a, b]) == pytest.approx(2 / 3) and C.disagreement([a, a]) == 0.0
    with pytest.raises(ConfigError, match="non-negative"):
        C.average([a, b], [1, -1])
    with pytest.raises(DataError, match="different shapes"):
        C.average([a, b[:2]])


def _noisy_members(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Three members on a 3-class problem: a good one, a weaker one, and one that is confidently wrong half the
    time (a member a plain average trusts and a stacker learns to discount)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def member(acc: float, sharp: float) -> np.ndarray:
        pred = np.where(rng.random(n) < acc, y, rng.integers(0, 3, n))
        logits = rng.normal(0, 0.3, (n, 3))
        logits[np.arange(n), pred] += sharp
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    return [member(0.8, 2.0), member(0.7, 1.5), member(0.5, 6.0)], y


def test_stacker_learns_to_discount_a_bad_member_and_refuses_the_training_split(tmp_path):
    probas, y = _noisy_members(600, 0)
    test_p, test_y = _noisy_members(600, 1)
    with pytest.raises(DataError, match="not on the training split"):
        C.Stacker.fit(probas, y, split="train")
    st = C.Stacker.fit(probas, y, split="val")
    acc = lambda p: float(np.mean(p.argmax(1) == test_y))  # noqa: E731
    stacked, averaged = acc(st.predict_proba(test_p)), acc(C.average(test_p))
    best = max(acc(p) for p in test_p)
    assert stacked > averaged + 0.03 and stacked >= best - 0.01, (stacked, averaged, best)
    # saved as arrays and rebuilt: the same probabilities
    again = C.Stacker.from_arrays(st.arrays(), st.n_classes, st.C)
    np.testing.assert_array_equal(again.predict_proba(test_p), st.predict_proba(test_p))
    # through a safetensors file, as an ensemble folder keeps it (sklearn's multinomial coef_ is Fortran-ordered)
    from safetensors.numpy import load_file, save_file

    assert st.coef.shape == (3, 9)
    save_file(st.arrays(), str(tmp_path / "stacker.safetensors"))
    loaded = C.Stacker.from_arrays(load_file(str(tmp_path / "stacker.safetensors")), st.n_classes, st.C)
    np.testing.assert_array_equal(loaded.predict_proba(test_p), st.predict_proba(test_p))


def test_stacker_needs_every_class_in_its_data():
    probas, y = _noisy_members(60, 0)
    y = np.where(y == 2, 1, y)
    with pytest.raises(DataError, match="no example of 1 class"):
        C.Stacker.fit(probas, y, split="val")


def test_samme_step_puts_the_member_at_chance_under_the_new_weights():
    rng = np.random.default_rng(0)
    w = rng.random(50)
    miss = rng.random(50) < 0.2
    for k in (2, 5):
        err, alpha, new = C.samme_step(w, miss, k)
        assert err == pytest.approx(w[miss].sum() / w.sum())
        assert alpha == pytest.approx(np.log((1 - err) / err) + np.log(k - 1))
        assert new.sum() == pytest.approx(1.0)
        assert new[miss].sum() == pytest.approx((k - 1) / k)  # the member is at chance level now


# --- weight space -------------------------------------------------------------------------------------------------
def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_average_states_and_swa_recompute_batch_norm_statistics():
    from transferkit.ensemble.weights import average_states, swa_average

    nets = [_bn_net(s) for s in range(3)]
    states = [n.state_dict() for n in nets]
    avg = average_states(states)
    torch.testing.assert_close(avg["0.weight"], sum(s["0.weight"] for s in states) / 3)
    assert torch.equal(avg["1.num_batches_tracked"], states[0]["1.num_batches_tracked"])
    x = torch.randn(64, 3) * 2 + 1
    swa = swa_average(nets[0], states, lambda: [(x[:32], None), (x[32:], None)])
    torch.testing.assert_close(swa[0].weight, avg["0.weight"])
    with torch.no_grad():
        h = swa[0](x)  # batch-norm statistics of the averaged weights on the data, not averaged statistics
    torch.testing.assert_close(swa[1].running_mean, h.mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(swa[1].running_mean, avg["1.running_mean"])


def test_soups_average_batch_norm_statistics_or_re_estimate_them_for_the_averaged_weights():
    """A soup of batch-norm networks: by default (no ``finish``) every float tensor is the members' mean, running
    statistics included (the paper's recipe); with the re-estimation step the statistics are those of the averaged
    weights' activations, and the greedy soup judges each candidate after that step."""
    from transferkit.ensemble.weights import batch_norm_differs, greedy_soup, soup_model, uniform_soup

    class Net(nn.Sequential):
        def metadata(self):
            return {"backbone": "bn-net", "head": "linear", "classes": ["a", "b"]}

    nets = []
    for s in range(3):
        torch.manual_seed(s)
        net = Net(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        net.train()
        with torch.no_grad():
            for _ in range(5):  # members' running statistics move apart, as in fine-tuning
                net(torch.randn(32, 3) * (s + 1) + s)
        nets.append(net.eval())
    names = ["a", "b", "c"]
    assert batch_norm_differs(nets) and not batch_norm_differs([nets[0], nets[0]])
    soup = uniform_soup(nets, names)
    for k in ("1.running_mean", "1.running_var", "1.weight", "0.weight"):
        torch.testing.assert_close(soup.state_dict()[k], sum(n.state_dict()[k] for n in nets) / 3)
    assert torch.equal(soup.state_dict()["1.num_batches_tracked"], nets[0].state_dict()["1.num_batches_tracked"])

    x = torch.randn(256, 3) * 2 + 1

    def finish(model):  # the statistics of these weights' activations on x
        torch.optim.swa_utils.update_bn([x], model)

    again = soup_model(nets, [0, 1, 2], finish)
    with torch.no_grad():
        h = again[0](x)
    torch.testing.assert_close(again[1].running_mean, h.mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(again[1].running_mean, soup[1].running_mean)
    torch.testing.assert_close(again[0].weight, soup[0].weight)  # weights untouched by the step
    judged = []
    _, chosen, _ = greedy_soup(nets, names, lambda m: judged.append(m[1].running_mean.clone()) or 1.0, finish)
    assert chosen == [0, 1, 2]  # equal accuracy keeps a member
    # the candidate soups (after the three single members) were judged with re-estimated statistics
    with torch.no_grad():
        torch.testing.assert_close(judged[-1], again[0](x).mean(0), rtol=1e-4, atol=1e-5)


def test_ray_backend_without_ray_is_one_sentence_and_bad_jobs_are_refused():
    from transferkit.app.parallel import check_backend, run_parallel, threads_per_job

    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="pip install ray"):
        check_backend("ray", 2)
    with pytest.raises(ConfigError, match="positive"):
        run_parallel(dict, [{"x": 1}], jobs=0)
    with pytest.raises(ConfigError, match="Unknown parallel backend"):
        check_backend("slurm", 1)
    assert threads_per_job(3, cores=8) == 2 and threads_per_job(16, cores=2) == 1
    assert run_parallel(dict, [{"x": -2}, {"y": 3}]) == [{"x": -2}, {"y": 3}]


# --- folders of real runs -----------------------------------------------------------------------------------------
SKADA = "skada-covariate-source"


def _fit_run(root, name, backbone, seed, epochs=4):
    from transferkit.app.fit import run_fit
    from transferkit.config import RunConfig, apply_overrides

    cfg = apply_overrides(RunConfig(), [("data.name", SKADA), ("model.backbone", backbone),
                                        ("model.pretrained", False), ("train.epochs", epochs),
                                        ("train.seed", seed), ("train.progress", False), ("train.lr", 0.01),
                                        ("out", str(root / name))])
    return run_fit(cfg).out


@pytest.fixture(scope="module")
def skada_runs(tmp_path_factory):
    """Three finished runs on real data (skada's covariate-shift source), different backbones and seeds."""
    root = tmp_path_factory.mktemp("runs")
    return [_fit_run(root, "logreg", "mlp:2", 0), _fit_run(root, "mlp16", "mlp:2-16", 1),
            _fit_run(root, "mlp32", "mlp:2-32-16", 2)]


def test_ensemble_folder_loads_predicts_and_reports_like_a_model(skada_runs, tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import ensemble_runs
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    test = load_data(DataConfig(name=SKADA)).test
    for how in ("average", "stack"):
        res = ensemble_runs(skada_runs, how=how, out=tmp_path / how, data=SKADA)
        meta = json.loads((res.out / "ensemble.json").read_text())
        ev = meta["evaluation"]
        assert [m["name"] for m in ev["members"]] == ["logreg", "mlp16", "mlp32"]
        for row in [*ev["members"], ev["ensemble"]]:
            assert set(row) >= {"accuracy", "macro_f1", "ece"}
        assert 0 <= ev["disagreement"] <= 1 and (res.out / "ensemble.md").is_file()
        report = (res.out / "report.html").read_text(encoding="utf-8")  # the folder's report, members side by side
        assert "Ensemble against its members" in report and all(n in report for n in ("logreg", "mlp16", "mlp32"))
        assert f"{100 * ev['ensemble']['accuracy']:.2f}" in report
        assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in res.out.rglob("*"))
        loaded = TransferClassifier.load(res.out)
        members = [TransferClassifier.load(r) for r in skada_runs]
        member_p = [m.predict_proba(test) for m in members]
        got = loaded.predict_proba(test)
        assert got.shape == (len(test), 2)
        if how == "average":
            np.testing.assert_allclose(got, np.mean(member_p, axis=0), rtol=1e-6)
            # Jensen: the log loss of averaged probabilities is at most the members' mean log loss
            assert ev["ensemble"]["loss"] <= np.mean([m["loss"] for m in ev["members"]]) + 1e-12
        metrics = loaded.evaluate(test)
        assert metrics["accuracy"] == pytest.approx(ev["ensemble"]["accuracy"])
        assert list(loaded.predict(test.inputs[:3])) == [loaded.classes_[i] for i in got[:3].argmax(1)]


def test_stacking_refuses_training_data_by_name_and_by_content(skada_runs, tmp_path):
    from transferkit.app.ensemble import ensemble_runs
    from transferkit.config import DataConfig
    from transferkit.data import Splits, load_data

    with pytest.raises(DataError, match="not on the training split"):
        ensemble_runs(skada_runs, how="stack", out=tmp_path / "a", data=SKADA, fit_split="train")
    real = load_data(DataConfig(name=SKADA))
    disguised = Splits(train=real.train, val=real.train.subset(np.arange(200)), test=real.test)
    with pytest.raises(DataError, match="in the training data of member 'logreg'"):
        ensemble_runs(skada_runs, how="stack", out=tmp_path / "b", data=disguised)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not any(p.name.startswith(".") and p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_members_must_share_classes(skada_runs, tmp_path):
    from transferkit.app.ensemble import ensemble_runs

    other = _fit_run(tmp_path, "label-shift", "mlp:2", 0, epochs=1)
    meta = json.loads((other / "model.json").read_text())
    meta["classes"] = ["cat", "dog"]
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="same classes"):
        ensemble_runs([skada_runs[0], other], how="vote", out=tmp_path / "e", data=SKADA)


def test_soups_are_plain_models_and_greedy_never_loses_validation_accuracy(skada_runs, tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import ensemble_runs

    with pytest.raises(ConfigError, match="same source"):
        ensemble_runs(skada_runs, how="uniform-soup", out=tmp_path / "u", data=SKADA)
    root = tmp_path / "same"
    runs = [_fit_run(root, f"s{i}", "mlp:2-16", 1, epochs=e) for i, e in enumerate((2, 3, 4))]  # one init
    res = ensemble_runs(runs, how="greedy-soup", out=tmp_path / "g", data=SKADA)
    assert (res.out / "model.json").is_file()
    trace = res.report["greedy_trace"]
    kept = [t["soup_accuracy"] for t in trace if t["kept"]]
    assert kept == sorted(kept) and kept[0] == max(t["member_accuracy"] for t in trace)
    soup = TransferClassifier.load(res.out)
    assert type(soup) is TransferClassifier  # one model's prediction cost


def test_cli_ensemble_evaluate_and_errors(skada_runs, tmp_path, capsys):
    from transferkit.cli import main

    out = tmp_path / "vote"
    assert main(["ensemble", *map(str, skada_runs), "--how", "vote", "--data", SKADA, "--out", str(out)]) == 0
    assert "ensemble (vote)" in capsys.readouterr().out
    assert main(["evaluate", str(out), SKADA, "--out", str(tmp_path / "m.json")]) == 0
    assert "accuracy" in json.loads((tmp_path / "m.json").read_text())
    capsys.readouterr()
    assert main(["ensemble", str(skada_runs[0]), "--how", "vote", "--out", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["ensemble", "--out", str(tmp_path / "y")]) == 2
    assert main(["ensemble", str(skada_runs[0]), str(skada_runs[1]), "--how", "average", "--weights", "1,x",
                 "--data", SKADA, "--out", str(tmp_path / "z")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_a_damaged_ensemble_folder_is_one_sentence(skada_runs, tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import ensemble_runs
    from transferkit.errors import RunError

    res = ensemble_runs(skada_runs, how="average", out=tmp_path / "e", data=SKADA)
    meta = json.loads((res.out / "ensemble.json").read_text())
    meta["members"][0]["folder"] = "../../elsewhere"
    (res.out / "ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="outside the ensemble folder"):
        TransferClassifier.load(res.out)


def test_python_save_of_a_loaded_ensemble_round_trips(skada_runs, tmp_path):
    from transferkit.api import TransferClassifier
    from transferkit.app.ensemble import ensemble_runs
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.errors import RunError

    res = ensemble_runs(skada_runs, how="stack", out=tmp_path / "s", data=SKADA)
    ens = TransferClassifier.load(res.out)
    ens.save(tmp_path / "copy")
    again = TransferClassifier.load(tmp_path / "copy")
    test = load_data(DataConfig(name=SKADA)).test
    np.testing.assert_array_equal(again.predict_proba(test), ens.predict_proba(test))
    assert json.loads((tmp_path / "copy" / "ensemble.json").read_text())["evaluation"] == res.report
    with pytest.raises(RunError, match="not empty"):
        ens.save(tmp_path / "copy")
