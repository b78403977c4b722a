"""The monitor's replay: a labelled collection run as a site's stream, the checks after every film."""

import numpy as np
import pytest

from ml.evaluation.monitor_replay import _stream_order, simulate
from ml.serving.monitoring import ALARM, Film, Limits, overall_status, reference_from_films, run_checks
from tests.ml.serving.test_monitoring import _films, _mixed_films, reference  # noqa: F401 - reference is a fixture


def test_simulation_of_stratified_checks_equals_the_slow_way():
    reference = reference_from_films(_mixed_films(np.random.default_rng(15), 300, covid_share=0.4,
                                                  unfamiliar_if_covid=0.15, unfamiliar_otherwise=0.02))
    films = _mixed_films(np.random.default_rng(16), 60, covid_share=0.5, unfamiliar_if_covid=0.4,
                         unfamiliar_otherwise=0.1)
    result, = simulate(reference, films, feedback_shares=[0.0], streams=8, alpha=0.01, seed=5)
    rng = np.random.default_rng(5)
    alarmed_at, first_checks = [], {}
    for _ in range(8):
        order = rng.permutation(len(films))
        rng.random(len(films))  # the feedback draw: no film has feedback
        stream = [Film(films[i].predicted, films[i].alert, films[i].warnings) for i in order]
        for seen in range(1, len(stream) + 1):
            alarming = [c.code for c in run_checks(reference, stream[:seen], alpha=0.01) if c.status == ALARM]
            if alarming:
                alarmed_at.append(seen)
                for code in alarming:
                    first_checks[code] = first_checks.get(code, 0) + 1
                break
    assert alarmed_at  # the stream is meant to alarm, on the stratified check
    assert result.alarmed == len(alarmed_at) / 8
    assert result.median_films_to_alarm == float(np.median(alarmed_at))
    assert result.first_checks == dict(sorted(first_checks.items()))
    assert "warning:unfamiliar" in result.first_checks


def test_simulation_equals_running_the_checks_after_every_film(reference):
    films = _films(np.random.default_rng(6), 40, accuracy=0.5, alert_if_not_covid=0.6, unfamiliar=0.2)
    result, = simulate(reference, films, feedback_shares=[0.5], streams=5, alpha=0.01, seed=7)
    # The same streams, replayed the slow way.
    rng = np.random.default_rng(7)
    alarmed_at = []
    for _ in range(5):
        order = rng.permutation(len(films))
        with_feedback = rng.random(len(films)) < 0.5
        stream = [films[i] if with_feedback[j] else Film(films[i].predicted, films[i].alert, films[i].warnings)
                  for j, i in enumerate(order)]
        first = next((seen for seen in range(1, len(stream) + 1)
                      if overall_status(run_checks(reference, stream[:seen], alpha=0.01)) == ALARM), None)
        if first is not None:
            alarmed_at.append(first)
    assert result.alarmed == len(alarmed_at) / 5
    assert result.median_films_to_alarm == (float(np.median(alarmed_at)) if alarmed_at else None)


def test_long_streams_draw_with_replacement(reference):
    films = _films(np.random.default_rng(8), 30, accuracy=0.8, alert_if_not_covid=0.3)
    result, = simulate(reference, films, feedback_shares=[1.0], streams=3, length=500)
    assert result.films_per_stream == 500


def test_streams_at_another_covid_share_draw_that_share_and_can_break_the_ceilings_assumption(reference):
    films = ([Film("covid", True, (), "covid")] * 30 + [Film("normal", True, (), "normal")] * 9
             + [Film("normal", False, (), "normal")] * 21)  # validation-like: the alert on 30% of the others
    order = _stream_order(films, length=5000, covid_share=0.7)(np.random.default_rng(0))
    assert np.mean([films[index].confirmed == "covid" for index in order]) == pytest.approx(0.7, abs=0.03)
    with pytest.raises(ValueError, match="COVID-19 films and other films"):
        _stream_order([Film("normal", False, (), "normal")] * 3, length=10, covid_share=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        _stream_order(films, length=10, covid_share=1.5)
    # A model that alerts as on validation: quiet where 1 film in 10 is COVID-19, alarming where 19 in 20
    # are (more than the 30% the ceiling assumes); no feedback at all.
    limits = Limits(max_false_alerts=0.8, max_prevalence=0.3)
    low, = simulate(reference, films, feedback_shares=[0.0], streams=20, length=400, covid_share=0.1, limits=limits)
    high, = simulate(reference, films, feedback_shares=[0.0], streams=20, length=400, covid_share=0.95, limits=limits)
    assert low.alarmed == 0.0
    assert high.alarmed == 1.0 and high.first_checks == {"alert_rate_limit": 20}


def test_simulation_with_limits_equals_the_slow_way(reference):
    films = _films(np.random.default_rng(10), 40, accuracy=0.7, alert_if_not_covid=0.85)
    limits = Limits(min_sensitivity=0.95, max_false_alerts=0.6, max_prevalence=0.1)
    result, = simulate(reference, films, feedback_shares=[1.0], streams=4, limits=limits, alpha=0.01, seed=3)
    rng = np.random.default_rng(3)
    alarmed_at = []
    for _ in range(4):
        order = rng.permutation(len(films))
        rng.random(len(films))  # the feedback draw: every film has feedback
        stream = [films[i] for i in order]
        first = next((seen for seen in range(1, len(stream) + 1)
                      if overall_status(run_checks(reference, stream[:seen], limits=limits, alpha=0.01)) == ALARM),
                     None)
        if first is not None:
            alarmed_at.append(first)
    assert result.alarmed == len(alarmed_at) / 4
    assert result.median_films_to_alarm == (float(np.median(alarmed_at)) if alarmed_at else None)


def test_cli_stores_the_reference_then_replays_the_test_films(familiar_model_dir, tmp_path, capsys):
    import json
    import shutil

    from tests.conftest import write_synthetic_folder

    from ml.evaluation import monitor_replay
    from ml.evaluation.datasets import load_dataset, make_patient_split, save_split
    from ml.serving.artifact import file_sha256, load_metadata

    data = write_synthetic_folder(tmp_path / "data", count_per_class=10, seed=21)
    model = tmp_path / "model"
    shutil.copytree(familiar_model_dir, model)
    save_split(make_patient_split(samples=load_dataset(data), seed=0), model / "split.json")
    model_sha = file_sha256(model / "model.tflite")

    assert monitor_replay.main(["--model", str(model), "--data", str(data), "--simulate", "--quiet"]) == 2
    assert "has no reference" in capsys.readouterr().err
    assert monitor_replay.main(["--model", str(model), "--data", str(data), "--quiet"]) == 0
    reference = load_metadata(model).monitoring
    assert reference["n"] == sum(map(sum, reference["confusion"])) > 0
    assert file_sha256(model / "model.tflite") == model_sha

    out = tmp_path / "sim" / "replay.json"
    assert monitor_replay.main(["--model", str(model), "--data", str(data), "--simulate", "--subset", "test",
                            "--streams", "5", "--feedback", "1.0", "0.5", "--out", str(out), "--quiet"]) == 0
    written = json.loads(out.read_text())
    assert [run["feedback_share"] for run in written["simulations"]] == [1.0, 0.5]
    assert written["limits"] == pytest.approx({"min_sensitivity": 0.95, "max_false_alerts": 0.8,
                                               "max_prevalence": 0.3, "max_alert_rate": 0.86})
    assert written["all_films_with_feedback"]["alert_rate_limit"]["site_n"] == written["n"]
    assert written["all_films_with_feedback"]["sensitivity"]["reference_n"] == reference["confusion"][0][0] + \
        sum(reference["confusion"][0][1:])
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "| feedback on | streams alarmed |" in capsys.readouterr().out
