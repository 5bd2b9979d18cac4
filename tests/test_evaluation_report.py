import base64
import json
import re

import pytest

from paretoalign.core import ConfigError, DataError, InputFileError
from paretoalign.evaluation import (
    MethodResult,
    PointResult,
    build_results,
    load_results,
    plot_front,
    plot_kl,
    write_report,
    write_results,
)
from paretoalign.evaluation.plots import front_figure

NORMALIZATION = {"conciseness": {"mean": 40.0, "std": 10.0, "count": 8, "source": "base on 8 train prompts"},
                 "informativeness": {"mean": 40.0, "std": 10.0, "count": 8, "source": "base on 8 train prompts"}}
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


def make_method(name, rewards, objectives=("conciseness", "informativeness"), scorers=False, text="answer"):
    points = []
    for index, reward in enumerate(rewards):
        w = index / (len(rewards) - 1)
        weights = dict(zip(objectives, [w, 1 - w] if len(objectives) == 2 else [1 / len(objectives)] * len(objectives)))
        points.append(PointResult(
            weights=weights, rewards=dict(zip(objectives, reward)), stderr={o: 0.1 for o in objectives},
            raw={o: 1.0 for o in objectives}, kl=0.1 * index, kl_stderr=0.01, length=10.0 + index,
            length_tokens=14.0, tokens=100 + index, seconds=0.5, responses=4,
            samples=[{"prompt": "Why is the sky blue?", "response": f"{text} {index}"},
                     {"prompt": "Cook rice?", "response": HOSTILE}],
        ))
    normalization = {o: NORMALIZATION.get(o, NORMALIZATION["conciseness"]) for o in objectives}
    return MethodResult(name, list(objectives), points, normalization, uses_scorers_at_decode=scorers,
                        trained_tokens=7, training_seconds=2.0)


@pytest.fixture
def results():
    base = make_method("base", [[0.0, 0.0], [0.1, -0.1], [-0.2, 0.1]])
    prompting = make_method("prompting", [[-0.5, 0.8], [0.3, 0.3], [0.9, -0.6]], text="prompted")
    best = make_method("best_of_n", [[-0.2, 1.2], [0.6, 0.6], [1.3, -0.4]], scorers=True, text="best")
    return build_results([base, prompting, best], preset="test")


def test_build_results_has_the_issue_shape_and_hand_checked_numbers(results):
    assert results["objectives"] == ["conciseness", "informativeness"]
    assert results["reference_point"] == {"conciseness": -1.0, "informativeness": -1.0}
    assert results["normalization"] == NORMALIZATION
    assert results["preset"] == "test"
    best = results["methods"]["best_of_n"]
    assert set(best) >= {"points", "front", "hypervolume", "mip", "uses_scorers_at_decode", "cost"}
    assert set(best["points"][0]) >= {"weights", "rewards", "stderr", "kl", "length", "tokens", "seconds"}
    assert best["front"] == [0, 1, 2]
    assert results["methods"]["base"]["front"] == [0, 1, 2]
    # best_of_n points (-0.2,1.2), (0.6,0.6), (1.3,-0.4), reference (-1,-1): slices 0.8*2.2 + 0.8*1.6 + 0.7*0.6
    assert best["hypervolume"] == pytest.approx(0.8 * 2.2 + 0.8 * 1.6 + 0.7 * 0.6)
    # weights (0,1), (0.5,0.5), (1,0)
    assert best["mip"] == pytest.approx((1.2 + 0.6 + 1.3) / 3)
    assert best["uses_scorers_at_decode"] is True and results["methods"]["base"]["uses_scorers_at_decode"] is False
    assert best["cost"] == {"generated_tokens": 303, "trained_tokens": 7, "seconds": pytest.approx(3.5),
                            "training_seconds": 2.0, "training_generated_tokens": 0}


def test_results_round_trip_through_json(results, tmp_path):
    path = write_results(tmp_path / "run" / "results.json", results)
    assert load_results(path) == json.loads(json.dumps(results))
    assert load_results(tmp_path / "run") == load_results(path)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "results.json"]


def test_load_results_refuses_missing_broken_and_foreign_files(tmp_path):
    with pytest.raises(InputFileError):
        load_results(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"objectives": []}')
    with pytest.raises(DataError, match="reference_point"):
        load_results(tmp_path / "other.json")


def test_methods_on_different_scales_or_objectives_are_refused():
    a = make_method("a", [[0, 0], [1, 1]])
    b = make_method("b", [[0, 0], [1, 1]])
    b.normalization = {**b.normalization, "conciseness": {"mean": 0.0, "std": 1.0, "count": 1, "source": ""}}
    with pytest.raises(ConfigError, match="normalization"):
        build_results([a, b])
    c = make_method("c", [[0, 0, 0], [1, 1, 1]], objectives=("conciseness", "informativeness", "relevance"))
    with pytest.raises(ConfigError, match="different objectives"):
        build_results([a, c])
    with pytest.raises(ConfigError, match="twice"):
        build_results([a, make_method("a", [[0, 0], [1, 1]])])


def test_plots_write_pngs_for_two_and_three_objectives(results, tmp_path):
    front = plot_front(results, tmp_path / "front.png")
    kl = plot_kl(results, tmp_path / "kl.png")
    for path in (front, kl):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    three = ("conciseness", "informativeness", "relevance")
    results3 = build_results([make_method("m", [[0, 0, 1], [1, 0, 0], [0, 1, 0]], objectives=three)])
    assert len(front_figure(results3).axes) == 3  # one projection per pair of objectives


def test_report_is_self_contained_escaped_and_names_every_method(results, tmp_path):
    path = write_report(results, tmp_path)
    page = path.read_text(encoding="utf-8")
    assert path.name == "report.html"
    for name in results["methods"]:
        assert f"<td>{name}</td>" in page and f"<th>{name}</th>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "<script" not in page and "<link" not in page and "http" not in page.replace("http-equiv", "")
    assert html_escaped(HOSTILE) in page
    assert "uses the objective scorers" in page or "ranks with the objective scorers" in page
    assert "prompted 2" in page and "best 0" in page  # responses at several points side by side


def html_escaped(text):
    import html

    return html.escape(text, quote=True)


def test_points_on_one_spot_share_one_weight_label():
    blind = make_method("base", [[0.2, -0.3]] * 5)
    figure = front_figure(build_results([blind]))
    assert [t.get_text() for t in figure.axes[0].texts] == ["0.0…1.0 (5 points)"]
    figure = front_figure(build_results([make_method("m", [[0, 1], [0.5, 0.5], [0.5, 0.5]])]))
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["0.0", "0.5/1.0"]
