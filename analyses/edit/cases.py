"""One edit and its probes, the unit every loader yields and every method is scored on.

>>> case = EditCase(
...     case_id="0", subject="Vinson Massif", prompt="{} is located in the continent of",
...     target_new="Europe", target_true="Antarctica",
...     paraphrases=("Vinson Massif belongs to the continent of",),
...     neighbourhood=(Probe("Mount Erebus is located in the continent of", "Antarctica"),),
... )
>>> case.rewrite
'Vinson Massif is located in the continent of'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """A prompt and the answer it should keep (``answer`` ``""``: no known answer; the
    neighbourhood's probability score then skips it)."""

    prompt: str
    answer: str = ""


PORTABILITY_KINDS = ("alias", "one_hop")
"""Portability probes (KnowEdit's ``portability``): the subject under another name
(``Subject_Aliasing``) and a question one reasoning hop past the edit (``reasoning``)."""


@dataclass(frozen=True)
class Portable:
    """A prompt whose answer should follow the edit: ``answer`` is what an editor that carried
    the new fact over would give; ``kind`` is one of :data:`PORTABILITY_KINDS`."""

    prompt: str
    answer: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in PORTABILITY_KINDS:
            raise ValueError(
                f"portability kind must be one of {', '.join(PORTABILITY_KINDS)}, got {self.kind!r}"
            )


@dataclass(frozen=True)
class EditCase:
    """One requested rewrite: ``prompt.format(subject)`` should now yield ``target_new``.

    ``prompt`` holds ``{}`` where the subject goes. ``paraphrases`` are whole prompts that say
    the same about the same subject; ``neighbourhood`` are prompts about other subjects whose
    output the edit must not change. ``relation_probes`` are prompts about the *same* subject
    under other relations (KnowEdit's ``locality.Relation_Specificity``): the unedited model's
    greedy output must stay. ``portability`` are prompts whose answer should follow the edit
    (an alias of the subject, a one-hop question). ``relation`` and ``split`` are the bundled
    benchmarks' (``""`` for a user's file).
    """

    case_id: str
    subject: str
    prompt: str
    target_new: str
    target_true: str
    paraphrases: tuple[str, ...] = ()
    neighbourhood: tuple[Probe, ...] = ()
    relation: str = ""
    split: str = ""
    relation_probes: tuple[Probe, ...] = ()
    portability: tuple[Portable, ...] = ()

    def __post_init__(self) -> None:
        for name in ("paraphrases", "neighbourhood", "relation_probes", "portability"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if "{}" not in self.prompt:
            raise ValueError(f"case {self.case_id}: prompt {self.prompt!r} has no {{}}")

    @property
    def rewrite(self) -> str:
        """The rewrite prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    @property
    def statement(self) -> str:
        """The rewrite prompt, the text a write stores (``statement + target_new``)."""
        return self.rewrite


def answer_text(target: str) -> str:
    """How a target follows its prompt: one space, then the target (CounterFact's and ZsRE's
    targets carry no leading space; prompts end without one).

    >>> answer_text("Rome"), answer_text(" Rome")
    (' Rome', ' Rome')
    """
    return " " + target.strip()
