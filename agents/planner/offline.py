"""The embedded offline planner: deterministic phrase rules that turn a chemist's goal into a DesignSpec.

No model, no network: a fixed sequence of rules reads the goal, each rule claims the characters it used, and
whatever content words no rule claimed are reported back as ``Plan.unused``, so the chemist sees plainly what
was not understood instead of a silent default. The same goal always gives the same spec (and spec hash).

What it reads (examples, not an exhaustive grammar):

- lattice motifs and their synonyms: "kagome" / "trihexagonal" / "3.6.3.6", "honeycomb" / "graphene-like" /
  "hexagonal net", "triangular", "square net", "Lieb", "pyrochlore" / "corner-sharing tetrahedra", "snub
  square", ... -> ``motif.lattice`` (a ``generators.motifs`` template name); the element on the net from
  "kagome net of Mn", "Mn kagome", "kagome lattice of manganese", "Mn atoms on a kagome lattice";
  "bond length 2.6 A" -> ``motif.bond_length``;
- chemistry: systems ("Li-Co-O", "LiCoO", "LiCoO2"), element symbols and names ("manganese", "lead"), anion
  classes ("a ternary oxide of Mn" -> Mn and O required), "binary" ... "quinary" / "three-element",
  exclusions ("avoid Co", "without lead", "no rare earths", "cobalt-free");
- coordination: "tetrahedral Co", "octahedral", "square planar", "Co four-fold coordinated by O", "CN 6",
  "Co-O CN 4", "coordination number 6" -> a ``coordination`` guidance term (neighbour: the one named after
  "by", else O when the chemistry has O, else the most electronegative other element, else O);
- volume and density: "7 A^3 per atom", "volume per atom 7", "at most 7.2 A^3/atom", "between 6 and 8 A^3
  per atom", "density 5 g/cm3" (only with a known composition: a formula with counts, or one element);
- "no two atoms closer than 1.8 A" -> a ``min_distance`` term;
- stability: "within 50 meV of the hull", "E_hull below 0.05", "on the hull" -> ``thresholds.stable_e_hull``;
- cell size: "12 atoms per cell", "a 12-atom cell", "at most 20 atoms";
- budgets and seed: "100 candidates", "an hour", "90 minutes", "relax at most 20", "seed 7".

An impossible goal is a :class:`PlanningError` naming the problem: empty, an unknown element ("Xx-O",
"element Qz"), contradictions ("binary Li-Co-O", "avoid Co" with Co required, "kagome of Mn without Mn",
two lattices or two systems), or anything ``tools.spec.parse_spec`` rejects (e.g. more motif atoms than atoms
per cell). Words that are instructions rather than design constraints ("ignore the budget", "delete the
store") set nothing: they show up in ``unused``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymatgen.core import Composition, Element

from tessera.agents.planner.base import Plan, PlanningError
from tessera.tools.config import load_config
from tessera.tools.errors import InputError
from tessera.tools.paths import DATA_DIR
from tessera.tools.spec import DesignSpec, parse_spec

GENERATOR_META: Path = DATA_DIR / "checkpoints" / "generator.json"
"""The shipped generator's metadata (vocabulary, atom-count prior): read as JSON, no torch needed."""

VOLUME_CEILING: float = 1000.0
"""A^3/atom: the open end of "at least V A^3 per atom" (a spec holds finite JSON numbers; no crystal comes close)."""


# -- settings ---------------------------------------------------------------------------------------------------
class TermDefaults(BaseModel):
    """How hard to steer towards a kind of target when the goal does not say."""

    model_config = ConfigDict(extra="forbid")

    strength: float = Field(1.0, gt=0, description="weight of the term in the combined objective")
    tolerance: float = Field(0.5, ge=0, description="|value - target| within this counts as met (term's unit)")


class CoordinationDefaults(TermDefaults):
    """Coordination terms also need a soft cutoff per element pair (A)."""

    radius_factor: float = Field(1.25, gt=0, description="cutoff = factor x (covalent radius a + b)")
    cutoffs: dict[str, float] = Field(
        # The pairs the guidance case studies measured (benchmarks/bench_guidance.py).
        default_factory=lambda: {"Co-O": 2.6, "Cu-P": 2.6, "Cu-Cu": 2.8},
        description="'A-B' -> A, measured pairs (order-free)",
    )

    @field_validator("cutoffs")
    @classmethod
    def _pairs(cls, value: dict[str, float]) -> dict[str, float]:
        for pair, cutoff in value.items():
            parts = pair.split("-")
            if len(parts) != 2 or not all(_is_element(p) for p in parts):
                raise ValueError(f"cutoffs: {pair!r} is not an element pair such as Co-O")
            if not 0 < cutoff <= 6:
                raise ValueError(f"cutoffs: {pair} {cutoff} A is outside (0, 6]")
        return value


class BudgetCaps(BaseModel):
    """The most a goal may ask for; larger numbers are cut and the plan's notes say so."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(1024, ge=1)
    relaxations: int = Field(512, ge=0)
    wall_minutes: float = Field(600.0, gt=0)


class PlannerSettings(BaseModel):
    """configs/planner.yaml: the defaults the offline planner fills in."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(16, ge=1, description="crystals to sample when the goal names no budget")
    volume_per_atom: TermDefaults = Field(default_factory=TermDefaults)
    coordination: CoordinationDefaults = Field(default_factory=CoordinationDefaults)
    min_distance: TermDefaults = Field(default_factory=lambda: TermDefaults(tolerance=0.1))
    caps: BudgetCaps = Field(default_factory=BudgetCaps)
    max_goal_chars: int = Field(4000, ge=1)


def load_planner_settings(path: str | Path | None = None) -> PlannerSettings:
    """configs/planner.yaml (or ``path``) validated; one-line InputError naming the file when it is bad."""
    return load_config(PlannerSettings, "planner", path)


@dataclass(frozen=True)
class GeneratorFacts:
    """What the generator can make, for turning "avoid X" into an allowed-element list and reading "at most N atoms"."""

    vocab: tuple[str, ...]  # element symbols the generator can place, by atomic number
    max_atoms: int  # the largest atom count its prior draws
    source: str  # where these came from (said in the plan's notes)


@lru_cache(maxsize=4)
def generator_facts(meta_path: Path = GENERATOR_META) -> GeneratorFacts:
    """The shipped generator's vocabulary and largest atom count, from its JSON metadata (no torch).

    Without the file (an installed package ships no data/), every element up to Pu and the 20-atom cells of
    MP-20 stand in, and the source says so.
    """
    try:
        meta = json.loads(meta_path.read_text())
        vocab = tuple(Element.from_Z(int(z)).symbol for z in meta["vocab"])
        prior = [float(p) for p in meta["n_atoms_prior"]]
        max_atoms = max(i + 1 for i, p in enumerate(prior) if p > 0)  # index 0 is one atom
        return GeneratorFacts(vocab=vocab, max_atoms=max_atoms, source=f"the shipped generator's {len(vocab)} elements")
    except (OSError, ValueError, KeyError, TypeError):
        return GeneratorFacts(vocab=tuple(Element.from_Z(z).symbol for z in range(1, 95)), max_atoms=20,
                              source="elements H-Pu (no generator metadata found)")


# -- element facts ----------------------------------------------------------------------------------------------
def _is_element(symbol: str) -> bool:
    return symbol in _SYMBOLS


_SYMBOLS: frozenset[str] = frozenset(e.symbol for e in Element)
_NAMES: dict[str, str] = {e.long_name.lower(): e.symbol for e in Element}
_NAMES.update({"aluminium": "Al", "caesium": "Cs", "sulphur": "S"})  # British spellings

_RARE_EARTHS = ("Sc", "Y", *(Element.from_Z(z).symbol for z in range(57, 72)))
_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (pattern, elements); longest phrasings first so "rare-earth metals" is taken whole.
    (r"rare[- ]earth(?:s|\s+elements|\s+metals)?", _RARE_EARTHS),
    (r"lanthan(?:ide|oid)s?", tuple(Element.from_Z(z).symbol for z in range(57, 72))),
    (r"actin(?:ide|oid)s?", tuple(Element.from_Z(z).symbol for z in range(89, 104))),
    (r"noble\s+gas(?:es)?", ("He", "Ne", "Ar", "Kr", "Xe", "Rn")),
    (r"(?:precious|noble)\s+metals?", ("Ru", "Rh", "Pd", "Ag", "Os", "Ir", "Pt", "Au")),
    (r"platinum[- ]group(?:\s+metals|\s+elements)?", ("Ru", "Rh", "Pd", "Os", "Ir", "Pt")),
    (r"alkali(?:\s+metals?)?(?![- ]earth)", ("Li", "Na", "K", "Rb", "Cs", "Fr")),
    (r"alkaline[- ]earth(?:s|\s+metals?)?", ("Be", "Mg", "Ca", "Sr", "Ba", "Ra")),
    (r"halogens?|halides?", ("F", "Cl", "Br", "I", "At")),
    (r"radioactive(?:\s+elements)?", ("Tc", "Pm", *(Element.from_Z(z).symbol for z in range(84, 104)))),
    (r"toxic(?:\s+heavy)?(?:\s+elements|\s+metals)?", ("As", "Be", "Cd", "Hg", "Pb", "Tl")),
)

_ANION_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"oxyfluorides?", ("O", "F")), (r"oxynitrides?", ("O", "N")), (r"oxysulfides?|oxysulphides?", ("O", "S")),
    (r"oxides?", ("O",)), (r"sulfides?|sulphides?", ("S",)), (r"selenides?", ("Se",)), (r"tellurides?", ("Te",)),
    (r"nitrides?", ("N",)), (r"phosphides?", ("P",)), (r"arsenides?", ("As",)), (r"antimonides?", ("Sb",)),
    (r"carbides?", ("C",)), (r"borides?", ("B",)), (r"silicides?", ("Si",)), (r"germanides?", ("Ge",)),
    (r"hydrides?", ("H",)), (r"fluorides?", ("F",)), (r"chlorides?", ("Cl",)), (r"bromides?", ("Br",)),
    (r"iodides?", ("I",)),
)

# Element symbols that are also English words: at the start of a sentence they are read as words
# ("In Li-Co-O, ...", "No rare earths"); "I" is always the pronoun (iodine: "iodine", "Cs-Pb-I").
_WORDLIKE_SYMBOLS: frozenset[str] = frozenset({"In", "As", "At", "Be", "No", "He", "Am"})
# Capitalised two-letter English words that are not element symbols: never an unknown-element error.
_SHORT_WORDS: frozenset[str] = frozenset(
    {"an", "by", "do", "go", "hi", "if", "is", "it", "me", "my", "of", "oh", "ok", "on", "or", "so", "to", "up",
     "us", "we", "ah", "eh", "id", "ex", "vs", "ie", "eg", "uh", "ha", "yo", "lo", "ma"}
)
# All-capital words that spell element symbols but are words or abbreviations here ("CN 4", "NO", "OK").
_CAPS_WORDS: frozenset[str] = frozenset({"CN", "NO", "OK", "ON", "OF", "OR", "IN", "IS", "IT", "AS", "AT", "BE",
                                         "BY", "HE", "SO", "US", "IF", "NB", "PS", "PC", "UK", "TV", "BC", "HI"})

# -- words --------------------------------------------------------------------------------------------------------
STOPWORDS: frozenset[str] = frozenset("""
a an the and or of to in on at for with by from as into onto than then that this these those which who what
where when how is are was be been being it its has have having do does can could would should may might will
shall please me i we us my our you your find finding get give show make design designing propose discover
discovering search look looking want need needs like some any each every all also just only very such
crystal crystals material materials structure structures compound compounds solid solids phase phases stable
new novel thermodynamically candidate element elements system chemistry chemical let lets let's try using use
there their here well good nice interesting possible possibly ideally preferably something one ones kind sort
type types family
""".split())
"""Words that carry no constraint; never reported as unused (the issue's list plus English function words)."""

_NEGATIONS: frozenset[str] = frozenset({"no", "not", "without", "avoid", "avoiding", "non", "never", "nor"})

_NUMBER_WORDS: dict[str, float] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fifteen": 15, "sixteen": 16, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "hundred": 100, "a hundred": 100, "one hundred": 100, "thousand": 1000,
    "a thousand": 1000, "a dozen": 12, "dozen": 12, "single": 1, "million": 1e6, "a million": 1e6,
}
# A leading minus is read (and then refused where a value must be positive) rather than silently dropped.
_NUM = r"(?<![\w.])(?:-?\d+(?:\.\d+)?|" + "|".join(
    re.escape(w).replace(r"\ ", r"\s+") for w in sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")"
_NAMES_ALT = "|".join(sorted(_NAMES, key=len, reverse=True))
_ELEM = rf"(?:(?-i:[A-Z][a-z]?)(?![a-z])|(?:{_NAMES_ALT})(?![a-z]))"
"""One element, as a case-sensitive symbol or a (case-free) name."""


def _number(text: str) -> float:
    key = re.sub(r"\s+", " ", text.strip().lower())
    return float(_NUMBER_WORDS[key]) if key in _NUMBER_WORDS else float(key)


def _symbol(text: str) -> str | None:
    """The element symbol for a symbol or an element name, else None."""
    text = text.strip()
    if _is_element(text):
        return text
    return _NAMES.get(text.lower())


def _compile(pattern: str, *, ignore_case: bool = True) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


# -- the goal text and which parts of it the rules used -------------------------------------------------------
_TOKEN = re.compile(r"[A-Za-z][A-Za-z']*|\d+(?:\.\d+)?")
# 1:1 character replacements, so every span found in the working text is the same span of the goal.
_NORMALISE = str.maketrans({"Å": "A", "³": "3", "²": "2", "–": "-", "—": "-", "−": "-", "≤": "<", "≥": ">",
                            "é": "e", "\u00a0": " ", "’": "'", "×": "x"})


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    text: str


class _Text:
    """The goal (normalised 1:1) with a mark on every character some rule has used."""

    def __init__(self, goal: str) -> None:
        self.text = goal.translate(_NORMALISE)
        self.taken = [False] * len(self.text)
        self.tokens = [_Token(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(self.text)]

    def free(self, start: int, end: int) -> bool:
        return not any(self.taken[start:end])

    def take(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.taken[i] = True

    def search(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        """Matches that use no character already taken (checked as each is reached, so a rule may take as it goes)."""
        pos = 0
        while (m := pattern.search(self.text, pos)) is not None:
            if m.end() == m.start():
                pos = m.end() + 1
                continue
            if self.free(m.start(), m.end()):
                yield m
                pos = m.end()
            else:
                pos = m.start() + 1

    def token_free(self, i: int) -> bool:
        t = self.tokens[i]
        return self.free(t.start, t.end)

    def token_at(self, pos: int) -> int:
        """Index of the first token ending after ``pos``."""
        for i, t in enumerate(self.tokens):
            if t.end > pos:
                return i
        return len(self.tokens)

    def token_range(self, start: int, end: int) -> tuple[int, int]:
        """First and last token index overlapping [start, end)."""
        idx = [i for i, t in enumerate(self.tokens) if t.start < end and t.end > start]
        return (idx[0], idx[-1]) if idx else (self.token_at(start), self.token_at(start) - 1)

    def sentence_start(self, i: int) -> bool:
        before = self.text[: self.tokens[i].start].rstrip()
        return not before or before[-1] in ".!?:;"


# -- what the rules found ---------------------------------------------------------------------------------------
@dataclass
class _Mention:
    symbol: str
    token: int  # token index in the goal
    text: str


@dataclass
class _Coordination:
    cn: float
    first: int  # token range of the cue
    last: int
    phrase: str
    center: str | None = None
    neighbour: str | None = None


@dataclass
class _Draft:
    """Everything the rules read, before it becomes a spec."""

    used: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)  # phrases a rule recognised but could not apply (with why)
    values: dict[str, tuple[Any, str]] = field(default_factory=dict)  # field -> (value, phrase), set once
    systems: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    composition: Composition | None = None
    mentions: list[_Mention] = field(default_factory=list)
    implied: list[tuple[str, str]] = field(default_factory=list)  # (element, phrase) from "oxide", pairs, ...
    excluded: dict[str, str] = field(default_factory=dict)  # element -> phrase
    open_cue: str | None = None
    lattice: tuple[str, int, int, str] | None = None  # (template, first token, last token, phrase)
    motif_element: tuple[str, str] | None = None  # (symbol, phrase)
    alternatives: list[list[str]] = field(default_factory=list)  # "Sn, Ge or Ga": one of them, the model's pick
    coordination: list[_Coordination] = field(default_factory=list)
    volume: tuple[float | list[float], str] | None = None
    density: tuple[float, str | None, str] | None = None  # (g/cm3, comparison, phrase)

    def use(self, phrase: str, what: str) -> None:
        self.used.append(f"{phrase.strip()} -> {what}")

    def set(self, key: str, value: Any, phrase: str, what: str) -> None:
        """Set a field once; the same field set to two values is a contradiction, not a silent last-wins."""
        if key in self.values and self.values[key][0] != value:
            old_value, old_phrase = self.values[key]
            raise PlanningError(f"the goal sets {key} twice: {old_phrase.strip()!r} ({old_value}) and "
                                f"{phrase.strip()!r} ({value})")
        self.values[key] = (value, phrase)
        self.use(phrase, what)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values[key][0] if key in self.values else default


def _positive(phrase: str, value: float, what: str, *, allow_zero: bool = False) -> float:
    if value < 0 or (value == 0 and not allow_zero):
        raise PlanningError(f"{phrase.strip()!r}: {what} must be {'>= 0' if allow_zero else 'positive'}")
    return value


def _whole(phrase: str, value: float, what: str) -> int:
    if value != int(value):
        raise PlanningError(f"{phrase.strip()!r}: {what} is a whole number")
    return int(value)


# -- rules (in the order they run: specific phrasings before the general ones they contain) --------------------
_LATTICES: tuple[tuple[str, str], ...] = (
    (r"truncated[- ]trihexagonal|great\s+rhombitrihexagonal|4\.6\.12", "truncated_trihexagonal"),
    (r"snub[- ](?:tri)?hexagonal|3\.3\.3\.3\.6|3\^4\.6", "snub_hexagonal"),
    (r"truncated[- ]hexagonal|3\.12\.12|3\.12\^2", "truncated_hexagonal"),
    (r"(?:small\s+)?rhombitrihexagonal|3\.4\.6\.4", "rhombitrihexagonal"),
    (r"snub[- ]square|3\.3\.4\.3\.4|3\^2\.4\.3\.4", "snub_square"),
    (r"truncated[- ]square|4\.8\.8|4\.8\^2", "truncated_square"),
    (r"elongated[- ]triangular|3\.3\.3\.4\.4|3\^3\.4\^2", "elongated_triangular"),
    (r"kagome|trihexagonal|3\.6\.3\.6|\(3\.6\)\^2", "kagome"),
    (r"honeycomb|graphene[- ]like|graphitic|hexagonal\s+(?:net|sheet|layer)s?|6\.6\.6|6\^3", "honeycomb"),
    (r"lieb", "lieb"),
    (r"pyrochlore|corner[- ]sharing\s+tetrahedra", "pyrochlore"),
    (r"triangular(?![- ](?:planar|prism|bipyramid|coordinat))|3\.3\.3\.3\.3\.3|3\^6", "triangular"),
    (r"square\s+(?:net|lattice|grid|tiling|layer|sheet)s?|4\.4\.4\.4|4\^4", "square"),
)
_LATTICE_RE = [(_compile(rf"(?<![\w.])(?:{p})(?!\.?\d)(?:\s+(?:net|lattice|tiling|layer|sheet|sublattice|motif|"
                         rf"plane|arrangement|network)s?\b)?(?![a-z])"), name) for p, name in _LATTICES]


def _read_lattice(t: _Text, d: _Draft) -> None:
    """A lattice name or synonym (with its noun: "kagome net"); a negated one ("not kagome") is unusable."""
    for pattern, name in _LATTICE_RE:
        for m in t.search(pattern):
            first, last = t.token_range(m.start(), m.end())
            if _negated(t, first):
                d.unusable.append(f"{_negation_phrase(t, first, last)} (a spec cannot exclude a lattice)")
                _take_tokens(t, _negation_start(t, first), last)
                continue
            t.take(m.start(), m.end())
            if d.lattice is not None and d.lattice[0] != name:
                raise PlanningError(f"the goal names two lattices ({d.lattice[3]!r} and {m.group().strip()!r}); "
                                    f"a spec holds one motif")
            if d.lattice is None:
                d.lattice = (name, first, last, m.group())


def _negation_start(t: _Text, first: int) -> int:
    """Index of the negation word before token ``first`` (skipping an article), else ``first``."""
    i = first - 1
    while i >= 0 and t.tokens[i].text.lower() in ("a", "an", "the", "any") and t.token_free(i):
        i -= 1
    return i if i >= 0 and t.token_free(i) and t.tokens[i].text.lower() in _NEGATIONS else first


def _negated(t: _Text, first: int) -> bool:
    return _negation_start(t, first) != first


def _negation_phrase(t: _Text, first: int, last: int) -> str:
    return t.text[t.tokens[_negation_start(t, first)].start:t.tokens[last].end]


def _take_tokens(t: _Text, first: int, last: int) -> None:
    for i in range(first, last + 1):
        t.take(t.tokens[i].start, t.tokens[i].end)


_ENERGY_UNIT = r"(?P<unit>meV|eV)(?:\s*/\s*atom|\s+per\s+atom)?"
_HULL = r"(?:the\s+)?(?:convex\s+)?hull"
_STABILITY_RE = (
    _compile(rf"\bwithin\s+(?P<v>{_NUM})\s*(?:{_ENERGY_UNIT})?\s+(?:of|from|above)\s+{_HULL}"),
    _compile(rf"(?:\b(?:less\s+than|below|under|at\s+most|no\s+more\s+than|within|up\s+to)\s+|<=?\s*)?"
             rf"(?P<v>{_NUM})\s*{_ENERGY_UNIT}\s+(?:or\s+less\s+)?(?:above|from|of|over)\s+{_HULL}"),
    _compile(rf"\b(?:E_?hull|E[_ ]above[_ ]hull|energy\s+above\s+(?:the\s+)?hull|hull\s+(?:energy|distance)|"
             rf"distance\s+(?:to|from)\s+(?:the\s+)?hull)\s*(?:of\s+|is\s+)?(?:below|under|<=?|at\s+most|"
             rf"less\s+than|smaller\s+than|within|=|:|no\s+more\s+than|up\s+to|of)\s*(?P<v>{_NUM})\s*"
             rf"(?:{_ENERGY_UNIT})?"),
    _compile(rf"\bon\s+{_HULL}\b"),
)


def _read_stability(t: _Text, d: _Draft) -> None:
    """thresholds.stable_e_hull in eV/atom from "within 50 meV of the hull", "E_hull below 0.05", "on the hull"."""
    for pattern in _STABILITY_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            groups = m.groupdict()
            if groups.get("v") is None:
                value = 0.0
            else:
                value = _number(groups["v"])
                unit = groups.get("unit")
                if unit is None and value >= 1:
                    # No eV/atom stability ceiling is >= 1; a bare "50" is meV.
                    unit = "meV"
                    d.notes.append(f"{m.group().strip()!r}: no unit given, read as {value:g} meV/atom")
                if unit is not None and unit.lower() == "mev":
                    value = value / 1000.0
            _positive(m.group(), value, "a stability ceiling (eV/atom above the hull)", allow_zero=True)
            d.set("thresholds.stable_e_hull", round(value, 6), m.group(),
                  f"thresholds.stable_e_hull {value:g} eV/atom")


_VOL_UNIT = r"(?:A|Ang|angstroms?)\s*(?:\^\s*3|\*\*\s*3|3|\s+cubed)|cubic\s+angstroms?"
_PER_ATOM = r"\s*(?:/|per)\s*atom\b"
_AT_MOST = r"at\s+most|below|under|no\s+more\s+than|up\s+to|less\s+than|smaller\s+than|<=?"
_AT_LEAST = r"at\s+least|above|over|more\s+than|greater\s+than|no\s+less\s+than|>=?"
_ABOUT = r"about|around|approximately|near|close\s+to|roughly|~"
_CMP = (rf"(?:(?<![A-Za-z])(?:of|is|=|:)\s*)?"
        rf"(?:(?<![A-Za-z])(?P<cmp>{_AT_MOST}|{_AT_LEAST}|{_ABOUT})\s*)?")
_VOLUME_NAMED = r"(?:volume\s+per\s+atom|atomic\s+volume|volume\s*/\s*atom|per[- ]atom\s+volume)\s*"
_VOLUME_RE = (
    # "between 6 and 8 A^3 per atom", "6-8 A^3/atom", "6 to 8 A^3 per atom" ("and" only after "between", so
    # "CN 4 and 7 A^3 per atom" is not a range)
    _compile(rf"(?:{_VOLUME_NAMED})?(?:\bbetween\s+(?P<lo>{_NUM})\s*(?:{_VOL_UNIT})?\s*and|"
             rf"(?P<lo2>{_NUM})\s*(?:{_VOL_UNIT})?\s*(?:to|-))\s*(?P<hi>{_NUM})\s*(?:{_VOL_UNIT}){_PER_ATOM}"),
    _compile(rf"{_VOLUME_NAMED}(?:between\s+(?P<lo>{_NUM})\s*and|(?P<lo2>{_NUM})\s*(?:to|-))\s*(?P<hi>{_NUM})\s*"
             rf"(?:(?:{_VOL_UNIT})(?:{_PER_ATOM})?)?"),
    _compile(rf"{_CMP}(?P<v>{_NUM})\s*(?:{_VOL_UNIT}){_PER_ATOM}"),
    _compile(rf"{_VOLUME_NAMED}{_CMP}(?P<v>{_NUM})\s*(?:(?:{_VOL_UNIT})(?:{_PER_ATOM})?)?"),
)
_DENSITY_RE = _compile(
    rf"(?:\bdensity\s*(?:of\s+|is\s+)?)?{_CMP}(?P<v>{_NUM})\s*g\s*(?:/\s*cm\s*\^?\s*3|cm\s*\^?\s*-\s*3|/\s*cc\b|"
    rf"\s+per\s+(?:cubic\s+centimet(?:er|re)|cm\s*\^?\s*3))"
)


def _comparison(cmp: str | None) -> str | None:
    """'max', 'min' or None (a point) for a comparison phrase."""
    if cmp is None:
        return None
    cmp = re.sub(r"\s+", " ", cmp.lower())
    if re.fullmatch(_AT_MOST, cmp, re.IGNORECASE):
        return "max"
    if re.fullmatch(_AT_LEAST, cmp, re.IGNORECASE):
        return "min"
    return None


def _read_volume(t: _Text, d: _Draft) -> None:
    """A volume-per-atom target (a point or [lo, hi], A^3/atom) and any density (resolved later, needing a
    composition)."""
    for pattern in _VOLUME_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            g = m.groupdict()
            if g.get("hi") is not None:
                lo, hi = sorted((_number(g["lo"] or g["lo2"]), _number(g["hi"])))
                target: float | list[float] = [lo, hi]
            else:
                v = _number(g["v"])
                how = _comparison(g.get("cmp"))
                target = [0.0, v] if how == "max" else [v, VOLUME_CEILING] if how == "min" else v
            for v in target if isinstance(target, list) else [target]:
                if v != 0.0 or not isinstance(target, list):  # the open end [0, hi] of "at most" is fine
                    _positive(m.group(), v, "a volume per atom")
            _set_volume(d, target, m.group())
    for m in t.search(_DENSITY_RE):
        t.take(m.start(), m.end())
        if d.density is not None:
            raise PlanningError(f"the goal gives two densities ({d.density[2].strip()!r} and {m.group().strip()!r})")
        rho = _positive(m.group(), _number(m.group("v")), "a density")
        d.density = (rho, _comparison(m.group("cmp")), m.group())


def _set_volume(d: _Draft, target: float | list[float], phrase: str) -> None:
    if d.volume is not None and d.volume[0] != target:
        raise PlanningError(f"the goal gives two volume targets ({d.volume[1].strip()!r} and {phrase.strip()!r})")
    d.volume = (target, phrase)
    shown = f"[{target[0]:g}, {target[1]:g}]" if isinstance(target, list) else f"{target:g}"
    d.use(phrase, f"guidance volume_per_atom {shown} A^3/atom")


_DIST_UNIT = r"(?:A|angstroms?)\b"
_MIN_DISTANCE_RE = (
    _compile(rf"\b(?:min(?:imum)?|shortest|smallest)\s+(?:interatomic\s+|atom-atom\s+|bond\s+)?(?:distance|"
             rf"separation|bond\s+length|contact)s?\s*(?:(?:of|=|:|is|above|at\s+least|>=?|no\s+less\s+than)\s*)*"
             rf"(?P<v>{_NUM})\s*{_DIST_UNIT}"),
    _compile(rf"\bno\s+(?:two\s+)?atoms\s+(?:closer|nearer)\s+(?:together\s+)?than\s+(?P<v>{_NUM})\s*{_DIST_UNIT}"),
    _compile(rf"\b(?:all\s+)?(?:interatomic\s+)?distances\s+(?:above|over|of\s+at\s+least|at\s+least|>=?)\s*"
             rf"(?P<v>{_NUM})\s*{_DIST_UNIT}"),
)
_BOND_RE = _compile(
    rf"\b(?:bond\s+length|nearest[- ]neighbou?r\s+distance|spacing|(?-i:[A-Z][a-z]?)-(?-i:[A-Z][a-z]?)\s+"
    rf"(?:distance|bond\s+length|bond))\s*(?:of|=|:|is|around|about)?\s*(?P<v>{_NUM})\s*{_DIST_UNIT}"
)


def _read_distances(t: _Text, d: _Draft) -> None:
    """A minimum interatomic distance (A) and a motif bond length (A)."""
    for pattern in _MIN_DISTANCE_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            _positive(m.group(), _number(m.group("v")), "a distance")
            d.set("guidance.min_distance", _number(m.group("v")), m.group(),
                  f"guidance min_distance {_number(m.group('v')):g} A")
    for m in t.search(_BOND_RE):
        t.take(m.start(), m.end())
        d.set("motif.bond_length", _number(m.group("v")), m.group(), f"motif.bond_length {_number(m.group('v')):g} A")


_CELL = r"(?:\s*(?:per|in\s+the|in\s+a|in\s+each|in|/)\s*(?:unit\s+|primitive\s+|simulation\s+)?cell\b)"
_ATOMS_MAX_RE = _compile(rf"\b(?P<cmp>at\s+most|up\s+to|no\s+more\s+than|fewer\s+than|less\s+than|maximum\s+of|"
                         rf"max(?:imum)?|<=?)\s*(?P<v>{_NUM})\s+atoms\b{_CELL}?")
_ATOMS_RE = (
    _compile(rf"(?:\bexactly\s+)?(?P<v>{_NUM})[- ]atoms?{_CELL}"),
    _compile(rf"(?P<v>{_NUM})-atom\s+(?:unit\s+|primitive\s+)?cells?\b"),
    _compile(rf"\bcells?\s+(?:of|with)\s+(?:exactly\s+)?(?P<v>{_NUM})\s+atoms\b"),
    _compile(rf"(?:\bexactly\s+)?(?P<v>{_NUM})\s+atoms\b"),
)


def _read_atoms(t: _Text, d: _Draft, facts: GeneratorFacts) -> None:
    """chemistry.atoms from "12 atoms per cell"; "at most N" changes nothing when the prior already stops at N."""
    for m in t.search(_ATOMS_MAX_RE):
        t.take(m.start(), m.end())
        bound = _whole(m.group(), _number(m.group("v")), "an atom count")
        if re.match(r"fewer|less|<(?!=)", m.group("cmp"), re.IGNORECASE):
            bound -= 1
        if bound >= facts.max_atoms:
            d.use(m.group(), f"nothing to change: the atom-count prior draws at most {facts.max_atoms} atoms")
        else:
            d.set("chemistry.atoms", bound, m.group(), f"chemistry.atoms {bound}")
            d.notes.append(f"a spec fixes the atom count: {m.group().strip()!r} is read as exactly {bound} atoms")
    for pattern in _ATOMS_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            n = _whole(m.group(), _number(m.group("v")), "an atom count")
            d.set("chemistry.atoms", n, m.group(), f"chemistry.atoms {n}")


_N_ELEMENT_WORDS = {"unary": 1, "elemental": 1, "single-element": 1, "binary": 2, "ternary": 3, "quaternary": 4,
                    "quinary": 5, "senary": 6}
_N_ELEMENTS_RE = (
    _compile(r"\b(?P<w>unary|elemental|single-element|binary|ternary|quaternary|quinary|senary)\b"),
    _compile(rf"(?:\b(?P<cmp>at\s+most|up\s+to|no\s+more\s+than|at\s+least|fewer\s+than|more\s+than)\s+)?"
             rf"(?P<v>{_NUM})[- ](?:elements?|components?)\b"),
)


def _read_n_elements(t: _Text, d: _Draft) -> None:
    """chemistry.n_elements from "binary" ... "senary" or "three-element"; a bound ("at most 3") is unusable."""
    for pattern in _N_ELEMENTS_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            g = m.groupdict()
            if g.get("cmp"):
                d.unusable.append(f"{m.group().strip()} (a spec fixes the number of elements; say e.g. 'ternary')")
                continue
            if g.get("w"):
                n = _N_ELEMENT_WORDS[g["w"].lower()]
            else:
                n = _whole(m.group(), _number(g["v"]), "an element count")
            d.set("chemistry.n_elements", n, m.group(), f"chemistry.n_elements {n}")


_SAMPLES_RE = (
    _compile(rf"(?:\b(?:a\s+)?budget\s+of\s+)?(?:\b(?:sample|generate|draw|make|propose|try|produce|screen)\s+)?"
             rf"(?P<v>{_NUM})\s+(?:candidate\s+|new\s+)?(?:candidates?|samples|crystals|structures|designs|tries)\b"),
    _compile(rf"\b(?:sample|generate|draw)\s+(?P<v>{_NUM})\b(?!\s*(?:atoms|A\b|%|-))"),
)
_RELAX_RE = (
    _compile(rf"\brelax(?:ing)?(?:\s+(?:at\s+most|up\s+to|only|no\s+more\s+than|the\s+best|the\s+top|the\s+first))*"
             rf"\s+(?P<v>{_NUM})\b(?:\s+(?:of\s+them|candidates|crystals|structures))?"),
    _compile(rf"(?:\b(?:at\s+most|up\s+to|no\s+more\s+than|only)\s+)?(?P<v>{_NUM})\s+relaxations\b"),
)
_WALL_RE = _compile(
    rf"(?:\b(?:in|within|for|under|at\s+most|no\s+more\s+than|up\s+to|taking|budget\s+of)\s+)?"
    rf"(?:(?P<half>\bhalf\s+an\s+hour)|(?P<hour>\ban\s+hour)|(?P<day>\ba\s+day)|"
    rf"(?P<v>{_NUM})\s*(?P<u>hours?|hrs?|h|minutes?|mins?|days?)\b)"
)
_SEED_RE = _compile(r"\b(?:random\s+)?seed\s*(?:=|:|of|is)?\s*(?P<v>\d+)\b")


def _read_budgets(t: _Text, d: _Draft) -> None:
    """Relaxations, wall minutes, samples and the seed (relaxations first: "relax 20 candidates" is not 20 samples)."""
    for pattern in _RELAX_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            n = _whole(m.group(), _number(m.group("v")), "a relaxation count")
            d.set("budgets.relaxations", n, m.group(), f"budgets.relaxations {n}")
    for m in t.search(_WALL_RE):
        t.take(m.start(), m.end())
        g = m.groupdict()
        if g["half"]:
            minutes = 30.0
        elif g["hour"]:
            minutes = 60.0
        elif g["day"]:
            minutes = 1440.0
        else:
            unit = g["u"].lower()
            scale = 1440.0 if unit.startswith("d") else 60.0 if unit.startswith("h") else 1.0
            minutes = _number(g["v"]) * scale
        d.set("budgets.wall_minutes", minutes, m.group(), f"budgets.wall_minutes {minutes:g}")
    for pattern in _SAMPLES_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            n = _whole(m.group(), _number(m.group("v")), "a sample count")
            d.set("budgets.samples", n, m.group(), f"budgets.samples {n}")
    for m in t.search(_SEED_RE):
        t.take(m.start(), m.end())
        seed = int(m.group("v"))
        if seed >= 2**32:  # numpy and torch take seeds below 2^32 everywhere
            raise PlanningError(f"{m.group().strip()!r}: a seed is below 2^32 (4294967296)")
        d.set("seed", seed, m.group(), f"seed {seed}")


_EXCLUDE_CUE = _compile(r"\b(?:no|not|without|avoid(?:ing|s)?|exclud(?:e|es|ing)|free\s+of|except(?:\s+for)?|"
                        r"but\s+not|nor|never)\s+(?:any\s+|the\s+|use\s+|using\s+|containing\s+)?")
_GROUP_RE = [(_compile(rf"(?:{p})(?![a-z])"), els) for p, els in _GROUPS]
_SYMBOL_AT = re.compile(r"[A-Z][a-z]?(?![A-Za-z])")
_NAME_AT = _compile(rf"(?:{_NAMES_ALT})(?![a-z])")
_LIST_JOIN = _compile(r"\s*(?:,\s*(?:and\s+|or\s+|nor\s+)?|\s(?:and|or|nor)\s+|\s*/\s*|\s*&\s*)(?:no\s+|any\s+)?")
_FREE_SUFFIX = _compile(r"[- ]free\b")


def _item_at(t: _Text, pos: int) -> tuple[int, tuple[str, ...], str] | None:
    """An element or element group starting exactly at ``pos``: (end, symbols, label)."""
    for pattern, els in _GROUP_RE:
        m = pattern.match(t.text, pos)
        if m and t.free(m.start(), m.end()):
            return m.end(), els, m.group()
    m = _SYMBOL_AT.match(t.text, pos)
    if m and _is_element(m.group()) and t.free(m.start(), m.end()) and m.group() != "I":
        return m.end(), (m.group(),), m.group()
    m = _NAME_AT.match(t.text, pos)
    if m and t.free(m.start(), m.end()):
        return m.end(), (_NAMES[m.group().lower()],), m.group()
    return None


def _item_list(t: _Text, pos: int) -> tuple[int, list[tuple[tuple[str, ...], str]]]:
    """Items joined by commas/and/or from ``pos``: (end of the last item, [(symbols, label)])."""
    items: list[tuple[tuple[str, ...], str]] = []
    end = pos
    while (item := _item_at(t, pos)) is not None:
        end, symbols, label = item
        items.append((symbols, label))
        join = _LIST_JOIN.match(t.text, end)
        if join is None:
            break
        pos = join.end()
    return end, items


def _exclude(d: _Draft, items: list[tuple[tuple[str, ...], str]], phrase: str) -> None:
    symbols: list[str] = []
    for els, label in items:
        symbols.extend(els)
        if label.lower().startswith("toxic"):
            d.notes.append(f"{label!r} read as {', '.join(els)}")
    for s in symbols:
        d.excluded.setdefault(s, phrase.strip())
    shown = ", ".join(symbols) if len(symbols) <= 8 else f"{len(symbols)} elements ({', '.join(symbols[:4])}, ...)"
    d.use(phrase, f"excluded {shown}")


def _read_exclusions(t: _Text, d: _Draft) -> None:
    """Elements and groups after "no", "avoid", "without", "excluding", ... and before "-free"."""
    for m in t.search(_EXCLUDE_CUE):
        end, items = _item_list(t, m.end())
        if items:
            t.take(m.start(), end)
            _exclude(d, items, t.text[m.start():end])
    # "lead-free", "cobalt free", "rare-earth-free", "Co-free"
    pos = 0
    while (m := _FREE_SUFFIX.search(t.text, pos)) is not None:
        pos = m.end()
        if not t.free(m.start(), m.end()):
            continue
        start = _item_start_before(t, m.start())
        if start is not None:
            end, items = _item_list(t, start)
            if items and end == m.start():
                t.take(start, m.end())
                _exclude(d, items, t.text[start:m.end()])


def _item_start_before(t: _Text, end: int) -> int | None:
    """Where an element or group ending at ``end`` starts (the longest such item), else None."""
    for start in range(max(0, end - 40), end):
        if start > 0 and t.text[start - 1].isalpha():
            continue
        item = _item_at(t, start)
        if item is not None and item[0] == end:
            return start
    return None


_GEOMETRIES: tuple[tuple[str, float], ...] = (
    (r"tetrahedr(?:al(?:ly)?|ons?|a)", 4), (r"octahedr(?:al(?:ly)?|ons?|a)", 6),
    (r"square[- ]planar(?:ly)?", 4), (r"(?:trigonal|triangular)[- ]planar(?:ly)?", 3),
    (r"trigonal[- ]bipyramid(?:al|s)?", 5), (r"square[- ]pyramid(?:al|s)?", 5),
    (r"trigonal[- ]prism(?:atic|s)?", 6), (r"pentagonal[- ]bipyramid(?:al|s)?", 7),
    (r"square[- ]antiprism(?:atic|s)?", 8), (r"cub(?:ic|ically)\s+coordinat(?:ed|ion)", 8),
    (r"cuboctahedr(?:al|on|a)", 12), (r"icosahedr(?:al|on|a)", 12), (r"linear(?:ly)?\s+coordinat(?:ed|ion)", 2),
    (r"see[- ]?saw", 4),
)
_GEOMETRY_RE = [(_compile(rf"\b(?:{p})(?![a-z])"), cn) for p, cn in _GEOMETRIES]
_PAIR_CN_RE = _compile(rf"(?<![\w-])(?-i:(?P<c>[A-Z][a-z]?)-(?P<nb>[A-Z][a-z]?))\s+(?:CN|coordination(?:\s+number)?)"
                       rf"\s*(?:=|:|of|is)?\s*(?P<v>{_NUM})")
_CN_RE = (
    _compile(rf"(?P<v>{_NUM})[- ]?fold(?![a-z])(?:\s+coordinat(?:ed|ion))?"),
    _compile(rf"(?P<v>{_NUM})-coordinat(?:ed|e)\b"),
    _compile(r"\b(?-i:CN)\s*(?:=|:|of|is)?\s*(?P<v>\d+(?:\.\d+)?)\b"),
    _compile(rf"\bcoordination\s+numbers?\s*(?:of|=|:|is)?\s*(?P<v>{_NUM})"),
    _compile(rf"\b(?:coordinated|surrounded)\s+by\s+(?P<v>{_NUM})\s+(?P<nb>{_ELEM})"
             rf"(?:\s+(?:nearest\s+)?(?:atoms|ions|neighbou?rs|ligands))?"),
    _compile(rf"\b(?:(?:with|has|having|surrounded\s+by)\s+)?(?P<v>{_NUM})\s+(?P<nb>{_ELEM})\s+(?:nearest\s+)?"
             rf"(?:neighbou?rs|ligands)\b"),
    _compile(rf"\bcoordination\s+(?:of\s+)?(?P<v>\d+(?:\.\d+)?)\b"),
)
_NEIGHBOUR_AFTER = _compile(rf"(?:\s+(?:coordinated|coordination|coordinate|environments?|sites?|geometry|"
                            rf"polyhedra|units))*\s+(?:by|with|to)\s+(?:(?:four|six|eight|two|three|\d+)\s+)?"
                            rf"(?P<nb>{_ELEM})(?:\s+atoms|\s+ions|\s+ligands)?")
_FILLER_AFTER = _compile(r"(?:\s+(?:coordinated|coordination|coordinate|environments?|sites?|geometry|units))+\b")


def _read_coordination(t: _Text, d: _Draft) -> None:
    """Coordination cues: "Co-O CN 4" pairs first, then geometry words and numbers, each with an optional
    "coordinated by X" neighbour; the centre is bound later, once element mentions are known."""
    for m in t.search(_PAIR_CN_RE):
        center, nb = m.group("c"), m.group("nb")
        if not (_is_element(center) and _is_element(nb)):
            continue  # left for the system rule, which names the unknown symbol
        t.take(m.start(), m.end())
        first, last = t.token_range(m.start(), m.end())
        cn = _positive(m.group(), _number(m.group("v")), "a coordination number", allow_zero=True)
        d.coordination.append(_Coordination(cn, first, last, m.group(), center, nb))
    cues = [(p, cn) for p, cn in _GEOMETRY_RE] + [(p, None) for p in _CN_RE]
    for pattern, cn in cues:
        for m in t.search(pattern):
            first, last = t.token_range(m.start(), m.end())
            if _negated(t, first):
                d.unusable.append(f"{_negation_phrase(t, first, last)} (a spec cannot exclude a coordination)")
                _take_tokens(t, _negation_start(t, first), last)
                continue
            value = float(cn) if cn is not None else _positive(m.group(), _number(m.group("v")),
                                                               "a coordination number", allow_zero=True)
            nb = _symbol(m.group("nb")) if "nb" in m.groupdict() and m.group("nb") else None
            end = m.end()
            after = _NEIGHBOUR_AFTER.match(t.text, end) if nb is None else None
            if after is not None and _symbol(after.group("nb")) is not None and t.free(end, after.end()):
                nb, end = _symbol(after.group("nb")), after.end()
            elif (filler := _FILLER_AFTER.match(t.text, end)) is not None and t.free(end, filler.end()):
                end = filler.end()
            t.take(m.start(), end)
            first, last = t.token_range(m.start(), end)
            d.coordination.append(_Coordination(value, first, last, t.text[m.start():end], None, nb))


_SYSTEM_RE = re.compile(r"(?<![\w-])(?P<s>[A-Z][a-z]?(?:\s*-\s*[A-Z][a-z]?)+)(?![\w])")
_FORMULA_RE = re.compile(r"(?<![\w-])(?P<f>(?:[A-Z][a-z]?(?:\d+(?:\.\d+)?)?){2,})(?![\w-])")
_FORMULA_PART = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?")


def _read_systems(t: _Text, d: _Draft) -> None:
    """Chemical systems "Li-Co-O" and formulas "LiCoO", "LiCoO2" (the counts kept for a density only)."""
    for m in t.search(_SYSTEM_RE):
        parts = [p.strip() for p in m.group("s").split("-")]
        for p in parts:
            if not _is_element(p):
                raise PlanningError(f"{m.group().strip()!r}: {p!r} is not an element symbol")
        t.take(m.start(), m.end())
        _add_system(d, tuple(dict.fromkeys(parts)), m.group())
    for m in t.search(_FORMULA_RE):
        token = m.group("f")
        if token.isupper() and token.isalpha() and (token in _CAPS_WORDS or len(token) > 4):
            continue  # an abbreviation or a shouted word, not a formula
        parts = _FORMULA_PART.findall(token)
        unknown = [s for s, _ in parts if not _is_element(s)]
        if unknown:
            if token.isupper() and token.isalpha():
                continue  # "DFT", "MP": an abbreviation
            raise PlanningError(f"{token!r}: {unknown[0]!r} is not an element symbol")
        t.take(m.start(), m.end())
        symbols = tuple(dict.fromkeys(s for s, _ in parts))
        if any(n for _, n in parts):
            d.composition = Composition(token)
            d.notes.append(f"{token}: the proportions are not a DesignSpec field; used as the system "
                           f"{'-'.join(symbols)} (and for any density)")
        _add_system(d, symbols, token)


def _add_system(d: _Draft, symbols: tuple[str, ...], phrase: str) -> None:
    for other, other_symbols in d.systems:
        if set(other_symbols) != set(symbols):
            raise PlanningError(f"the goal names two chemical systems ({other.strip()!r} and {phrase.strip()!r}); "
                                f"a spec holds one")
    d.systems.append((phrase, symbols))
    d.use(phrase, f"chemical system {'-'.join(symbols)}")


_ANION_RE = [(_compile(rf"\b(?:{p})\b"), els) for p, els in _ANION_WORDS]
_OPEN_RE = _compile(r"\b(?:containing|contains?|including|includes?|based(?:\s+on)?|doped\s+with|"
                    r"(?:and|plus|with)\s+(?:any\s+)?other\s+elements?|(?:and|plus)\s+others)\b")


def _read_anions_and_openness(t: _Text, d: _Draft) -> None:
    """Anion classes ("oxide" requires O) and words that leave room for other elements ("containing")."""
    for pattern, els in _ANION_RE:
        for m in t.search(pattern):
            t.take(m.start(), m.end())
            d.implied.extend((e, m.group()) for e in els)
            d.use(m.group(), f"requires {', '.join(els)}")
    for m in t.search(_OPEN_RE):
        t.take(m.start(), m.end())
        if d.open_cue is None:
            d.open_cue = m.group()
        d.use(m.group(), "other elements allowed")


def _read_mentions(t: _Text, d: _Draft) -> None:
    """Every free element symbol (case-sensitive) or name left: the elements the goal names."""
    for i, tok in enumerate(t.tokens):
        if not t.token_free(i):
            continue
        symbol: str | None = None
        if _is_element(tok.text) and tok.text != "I":
            if not (tok.text in _WORDLIKE_SYMBOLS and t.sentence_start(i)):
                symbol = tok.text
        elif tok.text.lower() in _NAMES:
            symbol = _NAMES[tok.text.lower()]
        if symbol is not None:
            t.take(tok.start, tok.end)
            d.mentions.append(_Mention(symbol, i, tok.text))
            d.use(tok.text, f"element {symbol}")


def _read_alternatives(t: _Text, d: _Draft) -> None:
    """Element mentions joined by "or" ("Sn or Ge", "Sn, Ge or Ga"): the crystal needs one of them, not all.

    A chain is consecutive mentions separated by a comma (adjacent tokens) or by the word "or"; it counts as
    alternatives when at least one link is "or". The "or" words are taken (used)."""
    chain: list[_Mention] = []
    has_or = False
    or_tokens: list[int] = []

    def close() -> None:
        nonlocal chain, has_or, or_tokens
        if has_or and len(chain) > 1:
            symbols = list(dict.fromkeys(m.symbol for m in chain))
            if len(symbols) > 1:
                d.alternatives.append(symbols)
                for i in or_tokens:
                    t.take(t.tokens[i].start, t.tokens[i].end)
                d.use(" or ".join(symbols), "one of these elements (the model's choice)")
        chain, has_or, or_tokens = [], False, []

    for m in sorted(d.mentions, key=lambda m: m.token):
        if chain:
            prev = chain[-1]
            between = t.text[t.tokens[prev.token].end:t.tokens[m.token].start]
            if m.token - prev.token == 2 and t.tokens[prev.token + 1].text.lower() == "or":
                chain.append(m)
                has_or = True
                or_tokens.append(prev.token + 1)
                continue
            if m.token - prev.token == 1 and between.strip() == ",":
                chain.append(m)
                continue
            close()
        chain = [m]
    close()


def _check_unknown_symbols(t: _Text) -> None:
    """A free token shaped like an element symbol that is none ("Qz"; anything after "element") is an error."""
    for i, tok in enumerate(t.tokens):
        if not t.token_free(i) or _is_element(tok.text):
            continue
        after_element = i > 0 and t.tokens[i - 1].text.lower() in ("element", "elements")
        shaped = re.fullmatch(r"[A-Z][a-z]", tok.text) is not None and tok.text.lower() not in _SHORT_WORDS
        if shaped or (after_element and re.fullmatch(r"[A-Z][a-z]{0,2}", tok.text)):
            raise PlanningError(f"{tok.text!r} is not an element symbol")


# -- binding: which element a lattice or a coordination is about --------------------------------------------
_FILLERS_AFTER_LATTICE = frozenset({"net", "nets", "lattice", "lattices", "layer", "layers", "sheet", "sheets",
                                    "tiling", "sublattice", "sublattices", "motif", "plane", "planes", "of", "made",
                                    "formed", "by", "from", "built", "consisting", "composed", "entirely", "purely",
                                    "only", "atoms", "ions", "a", "an", "the"})
_FILLERS_BEFORE_LATTICE = frozenset({"atoms", "ions", "on", "in", "forming", "form", "forms", "arranged", "a", "an",
                                     "the", "based", "which", "that", "sit", "sitting", "as", "into", "sites"})


def _bind_motif(t: _Text, d: _Draft) -> None:
    """The element on the lattice: the first element reached from the lattice over filler words ("net of",
    "atoms on a"), forward first; else the only element named; else a PlanningError."""
    if d.lattice is None:
        return
    name, first, last, phrase = d.lattice
    by_token = {m.token: m for m in d.mentions}
    found = _walk(t, by_token, range(last + 1, len(t.tokens)), _FILLERS_AFTER_LATTICE)
    if found is None:
        found = _walk(t, by_token, range(first - 1, -1, -1), _FILLERS_BEFORE_LATTICE)
    if found is not None:
        mention, lo, hi = found
        _take_tokens(t, lo, hi)
        start, end = min(first, mention.token), max(last, mention.token)
        shown = t.text[t.tokens[start].start:t.tokens[end].end]
        d.motif_element = (mention.symbol, shown)
        d.use(shown, f"motif {name} of {mention.symbol}")
        return
    named = list(dict.fromkeys(m.symbol for m in d.mentions))
    if len(named) == 1:
        d.motif_element = (named[0], phrase)
        d.use(phrase, f"motif {name} of {named[0]} (the only element named)")
        return
    raise PlanningError(f"the goal names a {name} lattice but not which element forms it "
                        f"(say e.g. '{name} net of Mn')")


def _walk(t: _Text, by_token: dict[int, _Mention], steps: range,
          fillers: frozenset[str]) -> tuple[_Mention, int, int] | None:
    """Walk from the lattice over filler words to the first element mention: (mention, filler span lo, hi)."""
    touched: list[int] = []
    for i in steps:
        if i in by_token:
            span = touched or [i]
            return by_token[i], min(span), max(span)
        if t.tokens[i].text.lower() not in fillers:
            return None
        if t.token_free(i):
            touched.append(i)
    return None


def _bind_coordination(d: _Draft) -> None:
    """Each cue's centre: the nearest element mention within 4 words (not its "by X" neighbour); else the only
    element named; else a PlanningError."""
    for c in d.coordination:
        if c.center is not None:  # a "Co-O CN 4" pair names it
            continue
        best: tuple[int, int, _Mention] | None = None
        for m in d.mentions:
            if c.neighbour is not None and m.symbol == c.neighbour and m.token > c.last:
                continue  # the "by O" neighbour is not the centre
            gap = c.first - m.token if m.token < c.first else m.token - c.last
            if 0 < gap <= 4 and (best is None or (gap, m.token) < best[:2]):
                best = (gap, m.token, m)
        if best is not None:
            c.center = best[2].symbol
            continue
        named = list(dict.fromkeys(m.symbol for m in d.mentions if m.symbol != c.neighbour))
        if len(named) == 1:
            c.center = named[0]
            d.notes.append(f"{c.phrase.strip()!r}: centre {c.center}, the only element named")
            continue
        raise PlanningError(f"{c.phrase.strip()!r} does not say which element it is about "
                            f"(say e.g. 'tetrahedral Co' or 'Co four-fold coordinated by O')")


def _choose_neighbours(d: _Draft) -> None:
    """Fill in each coordination's neighbour: O when the chemistry has it, else the most electronegative other
    element named, else (nothing else named) O, which then becomes required."""
    pool = list(d.systems[0][1]) if d.systems else list(dict.fromkeys(
        [m.symbol for m in d.mentions] + [e for e, _ in d.implied]))
    for c in d.coordination:
        assert c.center is not None
        if c.neighbour is None:
            others = [e for e in pool if e != c.center]
            if "O" in others:
                c.neighbour = "O"
            elif others:
                c.neighbour = max(others, key=_electronegativity)
                d.notes.append(f"{c.phrase.strip()!r}: neighbour {c.neighbour}, the most electronegative other "
                               f"element")
            elif d.systems or c.center == "O":
                c.neighbour = c.center
                d.notes.append(f"{c.phrase.strip()!r}: {c.center}-{c.center}, the chemistry has no other element")
            else:
                c.neighbour = "O"
                d.notes.append(f"{c.phrase.strip()!r}: no anion named, O assumed (and required)")
        d.implied.append((c.center, c.phrase))
        d.implied.append((c.neighbour, c.phrase))
        d.use(c.phrase, f"guidance coordination {c.center}-{c.neighbour} CN {c.cn:g}")


def _electronegativity(symbol: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for elements without a value
        x = Element(symbol).X
    return float(x) if x is not None and math.isfinite(float(x)) else 0.0


# -- from the draft to spec fields ------------------------------------------------------------------------------
@dataclass
class _Chemistry:
    elements: list[str]
    required: list[str]
    n_elements: int


def _resolve_chemistry(d: _Draft, facts: GeneratorFacts) -> _Chemistry | None:
    """The allowed and required elements and their number; None when the goal says nothing about chemistry."""
    named = list(dict.fromkeys([m.symbol for m in d.mentions] + [e for e, _ in d.implied]))
    n_stated = d.get("chemistry.n_elements")
    if not (d.systems or named or n_stated or d.excluded):
        return None
    _check_exclusions(d, named)
    if d.systems:
        phrase, system = d.systems[0]
        outside = [e for e in named if e not in system]
        if outside:
            raise PlanningError(f"{', '.join(outside)} named but the system {'-'.join(system)} does not include "
                                f"{'it' if len(outside) == 1 else 'them'}")
        if n_stated and n_stated != len(system):
            raise PlanningError(f"{d.values['chemistry.n_elements'][1].strip()!r} ({n_stated} elements) contradicts "
                                f"the system {'-'.join(system)} ({len(system)} elements)")
        return _Chemistry(list(system), list(system), len(system))
    # "Sn or Ge": one element of each alternatives group is needed, the others are only allowed.
    optional = {e for group in d.alternatives for e in group}
    if d.motif_element is not None:
        optional.discard(d.motif_element[0])
    n_needed = len(named) - sum(len(g) - 1 for g in d.alternatives)
    if n_stated and n_stated < n_needed:
        raise PlanningError(f"{d.values['chemistry.n_elements'][1].strip()!r} ({n_stated} element"
                            f"{'s' if n_stated > 1 else ''}) but {len(named)} are required: {', '.join(named)}")
    # Named elements are the whole system ("kagome net of Mn with Sn" is Mn-Sn), unless the goal leaves room:
    # a larger element count, "containing", or only the motif's own element named ("a kagome net of Mn":
    # the atoms around the net are the model's choice, not more Mn).
    motif_only = d.motif_element is not None and named == [d.motif_element[0]]
    closed = bool(named) and d.open_cue is None and not motif_only and (not n_stated or n_stated == n_needed)
    if closed:
        d.notes.append(f"allowed elements: only those named ({', '.join(named)}); name a system, say 'ternary' "
                       f"or 'containing' to leave room for others")
        if optional:
            d.notes.append(f"one of {' / '.join(', '.join(g) for g in d.alternatives)} per crystal: the model's pick")
        return _Chemistry(named, [e for e in named if e not in optional], n_needed)
    elements: list[str] = []
    if d.excluded:
        allowed = [e for e in facts.vocab if e not in d.excluded]
        elements = allowed + [e for e in named if e not in allowed]
        d.notes.append(f"allowed elements: {facts.source} minus the {len(d.excluded)} excluded "
                       f"({len(elements)} left)")
    elif named:
        d.notes.append("other elements: the model's choice")
    return _Chemistry(elements, [e for e in named if e not in optional], n_stated or 0)


def _check_exclusions(d: _Draft, named: list[str]) -> None:
    if d.motif_element is not None and d.motif_element[0] in d.excluded:
        s = d.motif_element[0]
        raise PlanningError(f"the goal puts {s} on the motif ({d.motif_element[1].strip()!r}) but also excludes it "
                            f"({d.excluded[s]!r})")
    system = d.systems[0][1] if d.systems else ()
    for s in list(system) + named:
        if s in d.excluded:
            raise PlanningError(f"the goal excludes {s} ({d.excluded[s]!r}) but also requires it")


def _cutoff(center: str, neighbour: str, settings: CoordinationDefaults) -> float:
    """Soft coordination cutoff in A: a measured pair from the config, else factor x (covalent radii sum)."""
    for key in (f"{center}-{neighbour}", f"{neighbour}-{center}"):
        if key in settings.cutoffs:
            return float(settings.cutoffs[key])
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    radii = [CovalentRadius.radius.get(s) or _fallback_radius(s) for s in (center, neighbour)]
    return round(min(6.0, settings.radius_factor * sum(radii)), 2)


def _fallback_radius(symbol: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = Element(symbol).atomic_radius
    return float(r) if r is not None else 1.5


def _guidance(d: _Draft, chem: _Chemistry | None, settings: PlannerSettings) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = []
    volume = d.volume[0] if d.volume is not None else None
    if d.density is not None:
        density_volume = _density_to_volume(d, chem)
        if density_volume is not None:
            if volume is not None:
                raise PlanningError(f"the goal gives both a volume ({d.volume[1].strip()!r}) and a density "
                                    f"({d.density[2].strip()!r})")
            volume = density_volume
    if volume is not None:
        v = settings.volume_per_atom
        terms.append({"kind": "volume_per_atom", "target": volume, "tolerance": v.tolerance, "strength": v.strength})
    seen: dict[str, tuple[float, str]] = {}
    for c in d.coordination:
        assert c.center is not None and c.neighbour is not None
        key = f"{c.center}-{c.neighbour}"
        if key in seen:
            if seen[key][0] != c.cn:
                raise PlanningError(f"the goal asks for two coordinations of {c.center} by {c.neighbour} "
                                    f"({seen[key][1].strip()!r} and {c.phrase.strip()!r})")
            continue
        seen[key] = (c.cn, c.phrase)
        cs = settings.coordination
        terms.append({"kind": "coordination", "elements": [c.center, c.neighbour], "target": c.cn,
                      "cutoff": _cutoff(c.center, c.neighbour, cs), "tolerance": cs.tolerance,
                      "strength": cs.strength})
    if "guidance.min_distance" in d.values:
        md = settings.min_distance
        terms.append({"kind": "min_distance", "target": d.get("guidance.min_distance"), "tolerance": md.tolerance,
                      "strength": md.strength})
    return terms


def _density_to_volume(d: _Draft, chem: _Chemistry | None) -> float | list[float] | None:
    """Volume per atom (A^3) for the goal's density, when the composition is known; else the density is unused."""
    assert d.density is not None
    rho, how, phrase = d.density
    composition = d.composition
    if composition is None and chem is not None and len(chem.elements) == 1:
        composition = Composition(chem.elements[0])
    if composition is None:
        d.unusable.append(f"{phrase.strip()} (a density becomes a volume per atom only with a known composition: "
                          f"give a formula such as LiCoO2, or A^3 per atom)")
        return None
    mean_mass = float(composition.weight) / composition.num_atoms  # g/mol = amu per atom
    # 1 g/cm^3 = 0.602214 amu/A^3, so V/atom [A^3] = mass per atom [amu] / (rho * 0.602214).
    volume = round(mean_mass / (rho * 0.602214076), 3)
    # A density floor is a volume ceiling and the other way round.
    target: float | list[float] = volume
    if how == "max":
        target = [volume, VOLUME_CEILING]
    elif how == "min":
        target = [0.0, volume]
    d.use(phrase, f"guidance volume_per_atom {volume:g} A^3/atom (density {rho:g} g/cm3 of "
                  f"{composition.reduced_formula})")
    return target


# -- unused words -----------------------------------------------------------------------------------------------
def _unused(t: _Text, d: _Draft) -> list[str]:
    """Runs of words no rule used, trimmed of stopwords at both ends; runs break at punctuation."""
    phrases: list[str] = []
    run: list[int] = []

    def flush() -> None:
        words = [t.tokens[i] for i in run]
        while words and words[0].text.lower() in STOPWORDS:
            words.pop(0)
        while words and words[-1].text.lower() in STOPWORDS:
            words.pop()
        if words:
            phrases.append(t.text[words[0].start:words[-1].end])
        run.clear()

    for i, tok in enumerate(t.tokens):
        if not t.token_free(i):
            flush()
            continue
        if run and re.search(r"[,.;:!?()\[\]\"]", t.text[t.tokens[run[-1]].end:tok.start]):
            flush()
        run.append(i)
    flush()
    return phrases + d.unusable


def _position(text: str, phrase: str) -> int:
    at = text.find(phrase)
    return at if at >= 0 else len(text)


# -- the planner ------------------------------------------------------------------------------------------------
class OfflinePlanner:
    """Deterministic, rule-based planner: no model and no network; the same goal always gives the same spec.

    Args:
        settings: defaults for strengths, tolerances, cutoffs, budget and caps (``load_planner_settings()``).
        facts: what the generator can make (``generator_facts()``): the vocabulary behind "avoid X" and the
            largest atom count behind "at most N atoms".
    """

    name: str = "offline"

    def __init__(self, *, settings: PlannerSettings | None = None, facts: GeneratorFacts | None = None) -> None:
        self.settings = settings if settings is not None else load_planner_settings()
        self.facts = facts if facts is not None else generator_facts()

    def plan(self, goal: str, *, base: DesignSpec | None = None) -> Plan:
        """Read ``goal`` into a validated DesignSpec; ``base`` supplies every field the goal does not set.

        Raises:
            PlanningError: an empty or overlong goal, an unknown element, a contradiction, nothing usable, or a
                spec that ``parse_spec`` rejects; one line naming the problem.
        """
        if not goal or not goal.strip():
            raise PlanningError("the goal is empty: say what to make, e.g. 'a kagome net of Mn with Sn'")
        if len(goal) > self.settings.max_goal_chars:
            raise PlanningError(f"the goal is {len(goal)} characters; at most {self.settings.max_goal_chars} "
                                f"(a goal is a sentence or a paragraph)")
        t, d = _Text(goal), _Draft()
        self._read(t, d)
        chem = _resolve_chemistry(d, self.facts)
        guidance = _guidance(d, chem, self.settings)
        if "motif.bond_length" in d.values and d.lattice is None and (base is None or base.motif is None):
            d.unusable.append(f"{d.values['motif.bond_length'][1].strip()} (no lattice motif to apply it to)")
        unused = _unused(t, d)
        if not d.used and unused:
            raise PlanningError(f"nothing in the goal sets a design constraint (not used: {'; '.join(unused)})")
        if not d.used:
            d.notes.append("no constraints in the goal: every field keeps its default")
        data = self._spec_data(d, chem, guidance, base)
        data["goal"] = goal
        try:
            spec = parse_spec(data, source="goal")
        except InputError as exc:
            raise PlanningError(str(exc)) from None
        # In the goal's own order, so the account reads along with the sentence.
        used = sorted(d.used, key=lambda u: _position(t.text, u.split(" -> ")[0]))
        return Plan(goal=goal, spec=spec, backend=self.name, used=used, unused=unused, notes=d.notes)

    def _read(self, t: _Text, d: _Draft) -> None:
        """Run the rules in order: each takes the characters it used, so a later, more general rule cannot
        read them again (a lattice's "3.6.3.6" is no number; "Co-O CN 4" is a pair, not a system)."""
        _read_lattice(t, d)
        _read_stability(t, d)
        _read_volume(t, d)
        _read_distances(t, d)
        _read_atoms(t, d, self.facts)
        _read_n_elements(t, d)
        _read_budgets(t, d)
        _read_exclusions(t, d)
        _read_coordination(t, d)
        _read_systems(t, d)
        _read_anions_and_openness(t, d)
        _read_mentions(t, d)
        _read_alternatives(t, d)
        _check_unknown_symbols(t)
        _bind_motif(t, d)
        _bind_coordination(d)
        _choose_neighbours(d)

    def _spec_data(self, d: _Draft, chem: _Chemistry | None, guidance: list[dict[str, Any]],
                   base: DesignSpec | None) -> dict[str, Any]:
        """The spec as a dict: ``base`` (or the defaults), overlaid with what the goal set."""
        data: dict[str, Any] = base.model_dump(mode="json") if base is not None else {}
        chemistry = data.setdefault("chemistry", {})
        if chem is not None:
            chemistry.update(elements=chem.elements, required=chem.required, n_elements=chem.n_elements)
        if "chemistry.atoms" in d.values:
            chemistry["atoms"] = d.get("chemistry.atoms")
        if d.lattice is not None:
            assert d.motif_element is not None
            data["motif"] = {"lattice": d.lattice[0], "element": d.motif_element[0]}
        if "motif.bond_length" in d.values and data.get("motif"):
            data["motif"]["bond_length"] = d.get("motif.bond_length")
        if guidance:
            replaced = {(g["kind"], tuple(g.get("elements", []))) for g in guidance}
            kept = [g for g in data.get("guidance", []) if (g["kind"], tuple(g.get("elements", []))) not in replaced]
            data["guidance"] = kept + guidance
        if "thresholds.stable_e_hull" in d.values:
            data.setdefault("thresholds", {})["stable_e_hull"] = d.get("thresholds.stable_e_hull")
        data["budgets"] = self._budgets(d, data.get("budgets", {}), base is not None)
        if "seed" in d.values:
            data["seed"] = d.get("seed")
        return data

    def _budgets(self, d: _Draft, budgets: dict[str, Any], from_base: bool) -> dict[str, Any]:
        """The goal's budgets over the base's (or the configured default sample count), cut to the caps."""
        out = dict(budgets)
        if not from_base:
            out["samples"] = self.settings.samples
        for key in ("samples", "relaxations", "wall_minutes"):
            if f"budgets.{key}" in d.values:
                out[key] = d.get(f"budgets.{key}")
        caps = self.settings.caps
        for key, cap in (("samples", caps.samples), ("relaxations", caps.relaxations),
                         ("wall_minutes", caps.wall_minutes)):
            if out.get(key) is not None and out[key] > cap:
                d.notes.append(f"budgets.{key} {out[key]:.0f} capped at {cap:g} (caps in configs/planner.yaml)")
                out[key] = cap
        return out


__all__ = ["BudgetCaps", "GeneratorFacts", "OfflinePlanner", "PlannerSettings", "STOPWORDS", "generator_facts",
           "load_planner_settings"]
