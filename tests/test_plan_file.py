import pytest

from fastprune import Plan


def test_plan_round_trips_through_json(tmp_path):
    plan = Plan(keep={"a.conv": [3, 0, 1]}, channels={"a.conv": 5}, layers={"a.conv": {"scores": [0.5, 1.0]}},
                meta={"method": "l1"})
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    assert back.keep == {"a.conv": [0, 1, 3]}
    assert back.removal() == {"a.conv": [2, 4]}
    assert back.layers == plan.layers and back.meta == plan.meta


@pytest.mark.parametrize("text, msg", [
    ("not json", "not valid JSON"),
    ('{"format": "other"}', "format tag"),
    ('{"format": "fastprune.plan", "version": 99}', "version"),
    ('{"format": "fastprune.plan", "version": 1, "keep": {"a": [0]}}', "checksum"),
    ('{"format": "fastprune.plan", "version": "1"}', "version '1' is not supported"),
    ('{"format": "fastprune.plan", "version": 1, "keep": {"a": [0]}, "channels": {"a": Infinity}}', "Infinity"),
    ('[' * 100000 + ']' * 100000, "nested too deeply"),
])
def test_foreign_or_corrupt_plan_is_refused(text, msg):
    with pytest.raises(ValueError, match=msg):
        Plan.from_json(text)


def test_plan_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="outside"):
        Plan(keep={"c": [0, 7]}, channels={"c": 4})


@pytest.mark.parametrize("keep, channels, msg", [
    ({"a": [0.7]}, {"a": 4}, "whole number"),
    ({"a": [True]}, {"a": 4}, "whole number"),
    ({"a": [0]}, {"a": 1e300}, "outside|whole"),
    ({"a": "01"}, {"a": 4}, "not a list"),
])
def test_sealed_plan_with_bad_content_is_refused(keep, channels, msg):
    from fastprune._documents import seal
    import json

    text = json.dumps(seal({"format": "fastprune.plan", "version": 1, "keep": keep, "channels": channels}))
    with pytest.raises(ValueError, match=msg):
        Plan.from_json(text)
