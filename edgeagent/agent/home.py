"""A small simulated home: the demo environment whose state an utterance changes.

Its devices come from a home file (`data/simulated_home.yaml` by default, any file in the shape
`homefile.Home` reads otherwise). Devices are found by name, else by area (and domain); each
handler returns what it did, so the chat shows the effect and tests can check the state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtime import EdgeAgent, ToolCall

SIMULATED_HOME = Path(__file__).with_name("data") / "simulated_home.yaml"
# A device's state when the home file says nothing of it, by domain.
INITIAL_STATE = {"light": {"on": False, "brightness": 100, "color": "white"}, "switch": {"on": False},
                 "fan": {"on": False, "percentage": 0}, "cover": {"position": 0}, "climate": {"temperature": 20},
                 "media_player": {"playing": False, "volume": 30, "muted": False}, "vacuum": {"cleaning": False}}


@dataclass
class Device:
    name: str
    domain: str
    area: str
    state: dict[str, Any] = field(default_factory=dict)


def devices_of(home) -> list[Device]:
    """One simulated device per entity of a `homefile.Home`, named and placed as the file says."""
    areas = {a.id: a.name.lower() for a in home.areas}
    return [Device(e.name.lower(), e.domain or "switch", areas.get(e.area, ""), dict(INITIAL_STATE.get(e.domain, {})))
            for e in home.entities]


def default_devices(path: str | os.PathLike = SIMULATED_HOME) -> list[Device]:
    from .homefile import Home

    return devices_of(Home.load(path))


class SimulatedHome:
    """Devices, timers and lists, with a handler per supported intent."""

    DOMAIN_WORDS = {"light": "light", "lights": "light", "lamp": "light", "fan": "fan", "blinds": "cover"}

    def __init__(self, devices: list[Device] | None = None) -> None:
        self.devices = devices or default_devices()
        self.timers: list[dict[str, Any]] = []
        self.lists: dict[str, list[str]] = {"shopping list": []}

    def find(self, call: ToolCall, domain: str | None = None) -> list[Device]:
        name = str(call.slots.get("name", "")).lower()
        area = str(call.slots.get("area", "")).lower()
        if name:
            exact = [d for d in self.devices if d.name == name]
            if exact:
                return exact
            if name not in self.DOMAIN_WORDS:
                return [d for d in self.devices if name in d.name or d.name in name]
            # "the kitchen lights" names a kind of device, not one device: Home Assistant reads it
            # as the area's lights, and so does this home.
            domain = self.DOMAIN_WORDS[name]
        found = [d for d in self.devices if (not area or d.area == area) and (domain is None or d.domain == domain)]
        return found if area or domain else []

    def attach(self, agent: EdgeAgent) -> EdgeAgent:
        """Register this home's handlers as the agent's tools."""
        for intent, handler in self.handlers().items():
            agent.tool(intent)(handler)
        return agent

    def handlers(self):
        def switch(on: bool):
            def handle(call: ToolCall):
                devices = self.find(call, None if call.slots.get("name") else "light")
                for d in devices:
                    if "on" in d.state:
                        d.state["on"] = on
                    if "position" in d.state:
                        d.state["position"] = 100 if on else 0
                return {"changed": [d.name for d in devices], "on": on}
            return handle

        def light_set(call: ToolCall):
            devices = self.find(call, "light")
            for d in devices:
                d.state["on"] = True
                if "brightness" in call.slots:
                    d.state["brightness"] = int(call.slots["brightness"])
                if "color" in call.slots:
                    d.state["color"] = call.slots["color"]
            return {"changed": [d.name for d in devices], **{k: call.slots[k] for k in ("brightness", "color")
                                                           if k in call.slots}}

        def position(call: ToolCall):
            devices = self.find(call, "cover")
            for d in devices:
                d.state["position"] = int(call.slots.get("position", 0))
            return {"changed": [d.name for d in devices], "position": call.slots.get("position")}

        def temperature(call: ToolCall):
            devices = self.find(call, "climate") or [d for d in self.devices if d.domain == "climate"]
            for d in devices:
                d.state["temperature"] = call.slots.get("temperature")
            return {"changed": [d.name for d in devices], "temperature": call.slots.get("temperature")}

        def media(key: str, value: Any):
            def handle(call: ToolCall):
                devices = self.find(call, "media_player") or [d for d in self.devices if d.domain == "media_player"]
                for d in devices:
                    d.state[key] = value if value is not None else int(call.slots.get("volume_level", 0))
                return {"changed": [d.name for d in devices], key: value}
            return handle

        def start_timer(call: ToolCall):
            seconds = sum(int(call.slots.get(k, 0)) * m for k, m in (("hours", 3600), ("minutes", 60), ("seconds", 1)))
            self.timers.append({"name": call.slots.get("name"), "seconds": seconds})
            return {"timers": list(self.timers)}

        def cancel_timers(call: ToolCall):
            self.timers.clear()
            return {"timers": []}

        def add_item(call: ToolCall):
            list_name = str(call.slots.get("name", "shopping list"))
            self.lists.setdefault(list_name, []).append(str(call.slots.get("item", "")))
            return {"list": list_name, "items": self.lists[list_name]}

        def state(call: ToolCall):
            return {d.name: d.state for d in self.find(call) or self.devices}

        return {"HassTurnOn": switch(True), "HassTurnOff": switch(False), "HassLightSet": light_set,
                "HassSetPosition": position, "HassClimateSetTemperature": temperature,
                "HassMediaPause": media("playing", False), "HassMediaUnpause": media("playing", True),
                "HassMediaPlayerMute": media("muted", True), "HassMediaPlayerUnmute": media("muted", False),
                "HassSetVolume": media("volume", None), "HassStartTimer": start_timer,
                "HassCancelAllTimers": cancel_timers, "HassCancelTimer": cancel_timers,
                "HassShoppingListAddItem": add_item, "HassListAddItem": add_item, "HassGetState": state}
