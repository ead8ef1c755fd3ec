"""Home files: validation with the file and field named, fuzzy resolution, the satellite's context."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rapidfuzz")
yaml = pytest.importorskip("yaml")

from edgeagent.agent.homefile import Home, HomeError  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402
from edgeagent.tasks import ToolCall  # noqa: E402
from edgeagent.tasks.intent_slots import IntentSlotTask  # noqa: E402

HOME = {"floors": [{"id": "down", "name": "Downstairs", "aliases": ["ground floor"]}],
        "areas": [{"id": "living_room", "name": "Living Room", "floor": "down", "aliases": ["lounge"]},
                  {"id": "bedroom", "name": "Bedroom", "floor": "down"}],
        "entities": [{"id": "light.living_ceiling", "name": "Ceiling Light", "area": "living_room",
                      "aliases": ["big light"]},
                     {"id": "light.bedroom_ceiling", "name": "Ceiling Light", "area": "bedroom"},
                     {"id": "light.bedside_lamp", "name": "Bedside Lamp", "area": "bedroom"},
                     {"id": "climate.ac", "name": "Air Conditioner", "area": "bedroom", "aliases": ["ac"]}]}


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump(HOME))
    return Home.load(path)


def _resolved(home, slots, context=None):
    call = ToolCall("HassTurnOn", dict(slots))
    home.resolve(call, home.check_context(context or {}))
    return call


def test_names_resolve_to_the_homes_entities_and_keep_the_raw_text(home):
    call = _resolved(home, {"name": "the big light"})
    assert call.slots == {"name": "Ceiling Light"}
    assert call.resolved["name"] == {"raw": "the big light", "id": "light.living_ceiling", "name": "Ceiling Light",
                                     "score": 100.0}
    assert _resolved(home, {"name": "bed side lamp"}).resolved["name"]["id"] == "light.bedside_lamp"
    assert _resolved(home, {"area": "lounge"}).resolved["area"]["id"] == "living_room"
    assert _resolved(home, {"floor": "ground floor"}).resolved["floor"]["id"] == "down"


def test_a_shared_name_is_decided_by_the_area_said_or_the_satellites(home):
    assert _resolved(home, {"name": "ceiling light", "area": "bedroom"}).resolved["name"]["id"] == "light.bedroom_ceiling"
    assert _resolved(home, {"name": "ceiling light"}, {"area": "bedroom"}).resolved["name"]["id"] == \
        "light.bedroom_ceiling"
    assert _resolved(home, {"name": "ceiling light"}, {"area": "living room"}).resolved["name"]["id"] == \
        "light.living_ceiling"


def test_a_name_that_matches_nothing_is_reported_not_kept_as_a_device(home):
    for raw in ("flux capacitor", "garage door"):  # "flux capacitor" contains "ac": no partial matching
        call = _resolved(home, {"name": raw})
        assert call.resolved["name"] == {"raw": raw, "unmatched": True} and call.slots["name"] == raw


def test_context_fills_the_area_left_out_or_said_as_here_only_where_the_intent_takes_one(home):
    task = IntentSlotTask(["HassTurnOn", "HassGetCurrentTime"], ["O", "B-area", "I-area"],
                          intent_slots={"HassTurnOn": ["area", "name"]})
    for slots in ({}, {"area": "here"}):
        call = task.apply_context(ToolCall("HassTurnOn", dict(slots)), {"area": "Kitchen"})
        assert call.slots == {"area": "Kitchen"} and call.context == {"area": "Kitchen"}
    named = task.apply_context(ToolCall("HassTurnOn", {"area": "Bedroom"}), {"area": "Kitchen"})
    assert named.slots == {"area": "Bedroom"} and named.context == {}
    timeless = task.apply_context(ToolCall("HassGetCurrentTime", {}), {"area": "Kitchen"})
    assert timeless.slots == {} and timeless.context == {}


def test_bad_home_files_and_contexts_are_typed_errors_naming_the_field(home, tmp_path):
    cases = [({**HOME, "areas": HOME["areas"] + [HOME["areas"][0]]}, "duplicate id 'living_room'"),
             ({**HOME, "entities": [{"id": "light.x", "name": "X", "area": "attic"}]}, "names area 'attic'"),
             ({**HOME, "floors": [{"id": "down"}]}, "'name' must be a non-empty string"),
             ({**HOME, "rooms": []}, "unknown top-level field"),
             ([1, 2], "must hold an object")]
    for i, (data, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(HomeError, match=message) as info:
            Home.load(path)
        assert str(path) in str(info.value)
    (tmp_path / "broken.yaml").write_text("floors: [unclosed")
    with pytest.raises(HomeError, match="does not parse"):
        Home.load(tmp_path / "broken.yaml")
    with pytest.raises(InputError, match="not a area of the home"):
        home.check_context({"area": "attic"})
    from edgeagent.tasks.base import check_context

    for bad, message in ((["kitchen"], "must be an object"), ({"room": "x"}, "unknown key"), ({"area": ""}, "non-empty")):
        with pytest.raises(InputError, match=message):
            check_context(bad)


def test_the_simulated_home_is_a_home_file():
    from edgeagent.agent.home import SIMULATED_HOME, default_devices

    home = Home.load(SIMULATED_HOME)
    devices = default_devices()
    assert len(devices) == len(home.entities) and {d.name for d in devices} >= {"kitchen light", "roomba"}
