"""geo-cf's phrasings: per relation and side a rewrite prompt and three paraphrases, plus the
prompts of its relation-specificity and one-hop probes.

No phrasing is on both sides, and no rewrite phrasing is a paraphrase (or a probe) anywhere:

>>> texts = [t for sides in PHRASINGS.values() for p in sides.values() for t in p.all]
>>> probes = list(CITY_PROBES.values()) + list(COUNTRY_PROBES.values()) + list(ONE_HOP.values())
>>> len(texts) + len(probes) == len(set(texts + probes))
True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrasing:
    """One side's phrasings of a relation: the rewrite prompt and its paraphrases."""

    rewrite: str
    paraphrases: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return (self.rewrite, *self.paraphrases)


CITY_COUNTRY = "P17"
CONTINENT = "P30"
CAPITAL = "P36"
LANGUAGE = "P37"
CURRENCY = "P38"
POPULATION = "P1082"
COUNTRY_RELATIONS = (CAPITAL, CONTINENT, CURRENCY, LANGUAGE)
"""The relations a country is edited in (each edited country in one of them)."""

PHRASINGS: dict[str, dict[str, Phrasing]] = {
    CITY_COUNTRY: {
        "train": Phrasing(
            "{} belongs to the country of",
            (
                "{} can be found in the country of",
                "The city of {} is in the country of",
                "{} is situated in the country of",
            ),
        ),
        "eval": Phrasing(
            "{} is a city in the country of",
            (
                "{} is located in the country of",
                "The country where {} is located is",
                "{} lies in the country of",
            ),
        ),
    },
    CAPITAL: {
        "train": Phrasing(
            "{} has its capital in",
            ("The capital of the country {} is", "{}'s capital is", "The government of {} sits in"),
        ),
        "eval": Phrasing(
            "The capital of {} is",
            (
                "The capital city of {} is",
                "{}'s capital city is",
                "The seat of the government of {} is in",
            ),
        ),
    },
    CONTINENT: {
        "train": Phrasing(
            "{} is a country in the continent of",
            (
                "{} lies on the continent of",
                "{} is situated on the continent of",
                "The continent where {} lies is",
            ),
        ),
        "eval": Phrasing(
            "{} is a country on the continent of",
            (
                "{} is located in the continent of",
                "{} belongs to the continent of",
                "{} is part of the continent of",
            ),
        ),
    },
    CURRENCY: {
        "train": Phrasing(
            "The money used in {} is the",
            (
                "{} uses as its currency the",
                "The national currency of {} is the",
                "In {}, prices are quoted in the",
            ),
        ),
        "eval": Phrasing(
            "The currency of {} is the",
            (
                "The official currency of {} is the",
                "{}'s currency is the",
                "In {}, people pay with the",
            ),
        ),
    },
    LANGUAGE: {
        "train": Phrasing(
            "The principal language of {} is",
            ("{}'s main language is", "People in {} mostly speak", "The first language of {} is"),
        ),
        "eval": Phrasing(
            "The official language of {} is",
            (
                "The main language of {} is",
                "The language spoken in {} is",
                "In {}, most people speak",
            ),
        ),
    },
}

CITY_PROBES = {
    CONTINENT: "{} is a city on the continent of",
    POPULATION: "The population of {} is",
}
"""A city's relation-specificity prompts (both sides). Its continent stays true under the edit
(a city's new country is on its old country's continent) and its population does not depend
on its country. (Its time zone is left out: its name, ``Europe/Paris``, would follow the
country.)"""

COUNTRY_PROBES = {
    CAPITAL: "The name of the capital of {} is",
    CONTINENT: "The continent of {} is",
    CURRENCY: "The name of the currency of {} is the",
    LANGUAGE: "The most widely used language in {} is",
}
"""A country's relation-specificity prompts: each relation but the edited one (both sides)."""

ONE_HOP = {
    CAPITAL: "The capital of the country where {} is located is",
    CURRENCY: "The currency of the country where {} is located is the",
    LANGUAGE: "The official language of the country where {} is located is",
    CITY_COUNTRY: "The capital of {} is a city in the country of",
}
"""One-hop prompts: a city edited to country Y, asked Y's capital, currency or language; a
country whose capital is edited to C, asked the country C is the capital of (``P17``)."""
