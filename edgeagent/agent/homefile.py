"""The home an agent runs in: its floors, areas and entities, and slot values resolved to them.

A home file is YAML or JSON in the shape Home Assistant's test fixtures use:

    floors:   [{id, name, aliases?}]
    areas:    [{id, name, floor?, aliases?}]
    entities: [{id, name, area?, domain?, aliases?}]

`Home.resolve(call, context)` maps a ToolCall's `name`, `area` and `floor` to the home's own names
with fuzzy matching (`rapidfuzz`), so "the big light" becomes the entity whose alias it is and
"bed side lamp" bridges to "Bedside Lamp". The slot then holds the canonical name; `call.resolved`
keeps the raw text, the id and the score. A value that matches nothing is reported as unmatched,
never silently kept as if it were a device. Where two entities share a name, the area the
utterance names, else the satellite's area, decides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..tasks import ToolCall

# Similarity of 0–100 (see `similarity`) below which a spoken name is not taken to mean the home's
# name. Chosen before measuring, not fitted to any evaluation set: 75 admits a misheard letter or a
# split word in a short name ("bed side lamp", "hall way") and refuses names that merely share
# letters.
MATCH_CUTOFF = 75.0


def similarity(spoken: str, name: str, **_: Any) -> float:
    """The better of the edit-distance ratio of the two names without spaces ("bed side lamp" is
    "bedside lamp") and the ratio of their words sorted ("lamp bedside"), both from rapidfuzz.
    No partial matching: it lets "flux capacitor" contain the alias "ac"."""
    from rapidfuzz import fuzz

    return max(fuzz.ratio(spoken.replace(" ", ""), name.replace(" ", "")), fuzz.token_sort_ratio(spoken, name))
MAX_HOME_BYTES = 4 << 20


@dataclass(frozen=True)
class Place:
    """A floor, an area or an entity: its id, canonical name, other names, and where it is."""

    id: str
    name: str
    aliases: tuple[str, ...] = ()
    area: str | None = None  # an entity's area id
    floor: str | None = None  # an area's floor id
    domain: str | None = None

    @property
    def spoken(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class HomeError(InputError):
    """A home file that cannot be used: names the file and the field."""


def _places(path: Path, data: Mapping[str, Any], key: str, links: dict[str, str]) -> list[Place]:
    rows = data.get(key) or []
    if not isinstance(rows, list):
        raise HomeError(f"{path}: '{key}' must be a list of objects with id and name", field=key)
    places, seen = [], set()
    for i, row in enumerate(rows):
        where = f"{path}: {key}[{i}]"
        if not isinstance(row, Mapping):
            raise HomeError(f"{where} must be an object with id and name", field=key)
        unknown = sorted(set(row) - {"id", "name", "aliases", "area", "floor", "domain", "device_class"})
        if unknown:
            raise HomeError(f"{where}: unknown field(s) {unknown}", field=unknown[0])
        for field_name in ("id", "name"):
            if not isinstance(row.get(field_name), str) or not row[field_name].strip():
                raise HomeError(f"{where}: '{field_name}' must be a non-empty string", field=field_name)
        if row["id"] in seen:
            raise HomeError(f"{where}: duplicate id {row['id']!r} in '{key}'", field="id")
        seen.add(row["id"])
        aliases = row.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise HomeError(f"{where}: 'aliases' must be a list of names", field="aliases")
        for link in links:
            if row.get(link) is not None and not isinstance(row[link], str):
                raise HomeError(f"{where}: '{link}' must be an id", field=link)
        domain = row.get("domain") or (row["id"].split(".", 1)[0] if key == "entities" and "." in row["id"] else None)
        places.append(Place(row["id"], row["name"].strip(), tuple(a.strip() for a in aliases), area=row.get("area"),
                            floor=row.get("floor"), domain=domain))
    return places


class Home:
    """Floors, areas and entities; see the module's docstring."""

    def __init__(self, floors: list[Place], areas: list[Place], entities: list[Place], *, source: str = "home") -> None:
        self.floors, self.areas, self.entities, self.source = floors, areas, entities, source
        self.by_id = {p.id: p for p in (*floors, *areas, *entities)}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Home:
        """Read and validate a home file (`.yaml`, `.yml` or `.json`).

        Raises:
            HomeError: unreadable, not YAML/JSON, a field of the wrong type, a duplicate id, or an
                area or floor reference to an id the file does not define — naming file and field.
        """
        path = Path(path)
        if not path.is_file():
            raise HomeError(f"home file {path} does not exist or is not a file", field="home")
        if path.stat().st_size > MAX_HOME_BYTES:
            raise HomeError(f"home file {path} is over {MAX_HOME_BYTES} bytes", field="home")
        text = path.read_text(encoding="utf-8", errors="strict") if path.stat().st_size else ""
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except ImportError:
            raise HomeError("a YAML home file needs PyYAML: pip install 'edgeagent[agent]' (or give JSON)",
                            field="home") from None
        except Exception as exc:  # noqa: BLE001 - json and yaml raise their own error trees
            raise HomeError(f"home file {path} does not parse: {exc}", field="home") from None
        if not isinstance(data, Mapping):
            raise HomeError(f"home file {path} must hold an object with floors, areas and entities", field="home")
        unknown = sorted(set(data) - {"floors", "areas", "entities"})
        if unknown:
            raise HomeError(f"{path}: unknown top-level field(s) {unknown}; a home has floors, areas, entities",
                            field=unknown[0])
        floors = _places(path, data, "floors", {})
        areas = _places(path, data, "areas", {"floor": "floors"})
        entities = _places(path, data, "entities", {"area": "areas"})
        floor_ids, area_ids = {f.id for f in floors}, {a.id for a in areas}
        for i, area in enumerate(areas):
            if area.floor is not None and area.floor not in floor_ids:
                raise HomeError(f"{path}: areas[{i}] names floor {area.floor!r}, which no floor has", field="floor")
        for i, entity in enumerate(entities):
            if entity.area is not None and entity.area not in area_ids:
                raise HomeError(f"{path}: entities[{i}] names area {entity.area!r}, which no area has", field="area")
        return cls(floors, areas, entities, source=str(path))

    # -- matching ------------------------------------------------------------------------------

    @staticmethod
    def _best(query: str, places: list[Place]) -> tuple[Place, float] | None:
        from rapidfuzz import process, utils

        if not places or not query.strip():
            return None
        choices = [(spoken, place) for place in places for spoken in place.spoken]
        match = process.extractOne(query, [c[0] for c in choices], scorer=similarity, processor=utils.default_process,
                                   score_cutoff=MATCH_CUTOFF)
        if match is None:
            return None
        _, score, index = match
        return choices[index][1], float(score)

    def area(self, text: str) -> tuple[Place, float] | None:
        """The area a spoken name means, or None."""
        return self._best(_strip_article(text), self.areas)

    def check_context(self, context: Mapping[str, str]) -> dict[str, str]:
        """The context with its area and floor as this home's canonical names.

        Raises:
            InputError: an area or floor the home does not have (naming the home file and field).
        """
        checked = {}
        for key, places in (("area", self.areas), ("floor", self.floors)):
            if key in context:
                found = self._best(context[key], places) or next(((p, 100.0) for p in places if p.id == context[key]),
                                                                  None)
                if found is None:
                    raise InputError(f"context {key} {context[key]!r} is not a {key} of the home in {self.source}; "
                                     f"its {key}s: {[p.name for p in places]}", field=f"context.{key}")
                checked[key] = found[0].name
        return checked

    def resolve(self, call: ToolCall, context: Mapping[str, str] | None = None) -> ToolCall:
        """Resolve the call's floor, area and name in this home (in that order: a name is looked for in
        the area named, else the satellite's area, before anywhere)."""
        if not call.understood:
            return call
        context = context or {}
        area_place = None
        for slot, places in (("floor", self.floors), ("area", self.areas)):
            raw = call.slots.get(slot)
            if isinstance(raw, str):
                found = self._best(_strip_article(raw), places)
                call.resolved[slot] = _record(raw, found)
                if found is not None:
                    call.slots[slot] = found[0].name
                    if slot == "area":
                        area_place = found[0]
        raw = call.slots.get("name")
        if isinstance(raw, str):
            query = _strip_article(raw)
            if area_place is None and context.get("area"):
                area_place = (self.area(context["area"]) or (None,))[0]
            found = None
            if area_place is not None:  # a name in the room meant wins over a same-named one elsewhere
                found = self._best(query, [e for e in self.entities if e.area == area_place.id])
            best_anywhere = self._best(query, self.entities)
            if found is None or (best_anywhere is not None and best_anywhere[1] > found[1] + 10):
                found = best_anywhere
            call.resolved["name"] = _record(raw, found)
            if found is not None:
                call.slots["name"] = found[0].name
        return call


def _strip_article(text: str) -> str:
    words = text.strip().split()
    while words and words[0].lower() in ("the", "my", "our"):
        words = words[1:]
    return " ".join(words)


def _record(raw: str, found: tuple[Place, float] | None) -> dict[str, Any]:
    if found is None:
        return {"raw": raw, "unmatched": True}
    place, score = found
    return {"raw": raw, "id": place.id, "name": place.name, "score": round(score, 1)}
