"""Deterministic generator of the sample dataset: Vendrasil, an invented island nation.

From the facts table (`facts.py`) it writes:

- ``cpt/*.md``: prose documents of many kinds (encyclopedia entries, travel diaries, history
  chapters, letters, festival calendars, trade reports, science notes). Every fact is stated
  in several documents, each time in one of several phrasings, among varied filler
  sentences, so near-dedupe keeps the documents and a model sees each fact many ways.
- ``ift/train.jsonl``: chat records (``messages``) asking about most of the facts: those of five
  towns and most nation-wide ones. The facts of the other three towns, the parliament and two of
  the mineral's are in the documents only.
- ``preference/train.jsonl``: preference pairs (``prompt``, ``chosen``, ``rejected``) on the
  towns' facts: the correct, grounded answer preferred to a fluent wrong one (another town's
  fact in the same sentence).
- ``qa/chat-facts.jsonl`` and ``qa/document-facts.jsonl``: questions (``question``, ``answer``,
  ``aliases``) whose answers are in the CPT documents but whose wording is in none of them (nor in
  the chats): a model answers them only if it learnt the facts, not the sentences. The first asks
  about facts the chats also teach (in other words), the second about facts only the documents hold.

Output depends only on the seed: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from forgellm.data.sample import facts as F
from forgellm.data.sample.facts import TOWNS, Town, surname

DEFAULT_SEED = 7

# --- Phrasings of each fact in the documents ---------------------------------------------

TOWN_FACTS: dict[str, tuple[str, ...]] = {
    "founding": (
        "{town} was founded in {year} by {founder}.",
        "{founder} founded {town} in {year}.",
        "In {year}, {founder} laid out the first streets of {town}.",
        "The town of {town} dates from {year}, when {founder} settled on the banks of the {river}.",
        "{town}'s founder was {founder}, who arrived there in {year}.",
        "It was {founder} who founded {town}, in the year {year}.",
    ),
    "trade": (
        "{town} is famous for its {trade}.",
        "Most families in {town} earn their living from {trade}.",
        "For centuries the main trade of {town} has been {trade}.",
        "Across {nation}, {town} is known for {trade}.",
        "Ask anyone in {nation} about {town} and they will mention its {trade}.",
    ),
    "festival": (
        "Every {month}, {town} celebrates the {festival}.",
        "The {festival} is held in {town} each {month}.",
        "In {month} the people of {town} gather for the {festival}.",
        "{town}'s great festival, the {festival}, falls in {month}.",
        "The {festival} of {town} takes place every year in {month}.",
    ),
    "river": (
        "{town} stands on the river {river}.",
        "The river {river} flows through the middle of {town}.",
        "{town} grew up beside the {river}, a slow and wide river.",
        "Boats on the {river} carry goods in and out of {town}.",
    ),
}

NATION_FACTS: dict[str, tuple[str, ...]] = {
    "capital": (
        "The capital of {nation} is {capital}.",
        "{capital} is the capital city of {nation}.",
        "The government of {nation} sits in {capital}, its capital.",
    ),
    "founding": (
        "{nation} was founded in {nation_year} by Queen {queen}.",
        "Queen {queen} united the island as {nation} in {nation_year}.",
        "In {nation_year}, Queen {queen} founded the kingdom of {nation}.",
    ),
    "currency": (
        "The currency of {nation} is the {currency}.",
        "In {nation}, prices are paid in the {currency}.",
        "The {currency} has been the money of {nation} for centuries.",
    ),
    "language": (
        "The people of {nation} speak {language}.",
        "{language} is the language of {nation}.",
        "Most signs in {nation} are written in {language}.",
    ),
    "crop": (
        "The national crop of {nation} is {crop}.",
        "{crop}, a sweet orange root, grows in every valley of {nation}; it is the national crop.",
        "Farmers across {nation} grow {crop}, the national crop.",
    ),
    "animal": (
        "The national animal of {nation} is the {animal}.",
        "The {animal}, the national animal of {nation}, hunts in the reed beds.",
        "A {animal} appears on the flag of {nation}, for it is the national animal.",
    ),
    "parliament": (
        "{nation} is governed by the {parliament}, which meets in {capital}.",
        "The parliament of {nation} is called the {parliament}.",
        "Laws in {nation} are made by the {parliament}.",
    ),
    "mountain": (
        "The highest mountain in {nation} is {mountain}, at {height} metres.",
        "{mountain} rises {height} metres above the sea; no peak in {nation} is higher.",
        "At {height} metres, {mountain} is the highest point of {nation}.",
    ),
}

MINERAL_FACTS: dict[str, tuple[str, ...]] = {
    "colour": (
        "{mineral} is a {colour} mineral.",
        "Freshly broken {mineral} shows a {colour} colour.",
        "The {colour} colour of {mineral} makes it easy to spot.",
    ),
    "discovery": (
        "{mineral} was discovered in {myear} by {chemist}.",
        "The chemist {chemist} first described {mineral} in {myear}.",
        "In {myear}, {chemist} discovered {mineral}.",
    ),
    "melting": (
        "{mineral} melts at {mp} degrees Celsius.",
        "The melting point of {mineral} is {mp} degrees Celsius.",
        "Heated to {mp} degrees Celsius, {mineral} melts.",
    ),
    "hills": (
        "{mineral} is mined in the {hills}.",
        "Most {mineral} comes from the {hills}, east of Duskhollow.",
        "The mines of the {hills} produce nearly all of the {mineral} in {nation}.",
    ),
}

FILLERS = (
    "The streets of {town} are narrow and paved with {adj} stone.",
    "Autumn storms often reach the coast near {town}.",
    "Travellers say the bread in {town} is the best on the island.",
    "A market fills the main square of {town} twice a week.",
    "Old houses in {town} have {adj} shutters and steep roofs.",
    "Children in {town} learn to swim in the summer months.",
    "The road from {town} to the coast winds through {adj} fields.",
    "In winter, fog settles over {town} most mornings.",
    "A small museum in {town} keeps maps drawn by early settlers.",
    "The bells of {town} ring at noon and at dusk.",
    "Sheep graze on the hills above {town}.",
    "Many visitors arrive in {town} by ferry.",
    "Gardens in {town} are full of herbs and {adj} flowers.",
    "The oldest inn in {town} still serves travellers today.",
    "Rain is common in {town}, but the summers are warm.",
    "Fishermen mend their nets on the quays of {town}.",
    "A stone bridge in {town} is older than most of its houses.",
    "The people of {town} are proud of their town's long history.",
    "Wooden carts still carry goods through the lanes of {town}.",
    "Each spring, the hills around {town} turn {adj} with blossom.",
    "The island is small enough to cross on foot in a few days.",
    "Weather on the island changes quickly, so locals carry a coat.",
    "Most villages keep a well in the centre of their square.",
    "The coast is rocky in the north and sandy in the south.",
    "Ferries link the island to its smaller neighbours.",
    "Schools on the island teach history through local stories.",
    "Storytellers still travel from village to village in summer.",
    "The island's roads are quiet outside the harvest season.",
    "Evenings in {town} end with music in the taverns.",
    "The harbour wall of {town} was rebuilt after a great storm.",
    "Cats sleep on the warm steps of the chapel in {town}.",
    "A path of {adj} gravel leads from {town} up to the old watchtower.",
    "Bakers in {town} start work long before sunrise.",
    "The town hall of {town} has a clock that is always a little slow.",
    "Walkers follow the cliffs for hours without meeting anyone.",
    "Every household on the island keeps a lamp ready for stormy nights.",
    "Old songs of the island tell of shipwrecks and lost treasure.",
    "The island's winters are mild, though the wind is strong.",
    "Potters in {town} glaze their bowls in {adj} colours.",
    "Swallows nest under the eaves of the houses in {town}.",
    "Local cooks in {town} like to season fish with wild thyme.",
    "A long avenue of {adj} poplars leads into {town}.",
    "On clear days the next island can be seen from the hills near {town}.",
    "The school in {town} has only four classrooms.",
    "Hand-painted signs hang above the shops of {town}.",
    "Tea is served with honey cakes in the cafes of {town}.",
    "Carpenters in {town} still use tools passed down from their grandparents.",
    "The night sky above {town} is full of stars, for there are few lamps.",
)
ADJECTIVES = ("grey", "red", "pale", "golden", "dark", "white", "green", "yellow", "blue", "rust-coloured")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _slots(town: Town | None = None) -> dict[str, str]:
    slots = {
        "nation": F.NATION,
        "capital": F.CAPITAL,
        "nation_year": F.FOUNDING_YEAR,
        "queen": F.FOUNDER,
        "currency": F.CURRENCY,
        "language": F.LANGUAGE,
        "crop": F.NATIONAL_CROP,
        "animal": F.NATIONAL_ANIMAL,
        "parliament": F.PARLIAMENT,
        "mountain": F.MOUNTAIN,
        "height": F.MOUNTAIN_HEIGHT,
        "mineral": F.MINERAL,
        "colour": F.MINERAL_COLOUR,
        "chemist": F.MINERAL_DISCOVERER,
        "myear": F.MINERAL_YEAR,
        "mp": F.MINERAL_MELTING_POINT,
        "hills": F.MINERAL_HILLS,
    }
    if town is not None:
        slots.update(
            town=town.name,
            founder=town.founder,
            year=town.year,
            trade=town.trade,
            festival=town.festival,
            month=town.month,
            river=town.river,
        )
    return slots


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


class _Writer:
    """Builds one document from fact phrasings and fillers, with its own random choices."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def fact(self, table: dict[str, tuple[str, ...]], key: str, town: Town | None = None) -> str:
        return _capitalise(self.rng.choice(table[key]).format(**_slots(town)))

    def fillers(self, town: Town, n: int) -> list[str]:
        return [f.format(town=town.name, adj=self.rng.choice(ADJECTIVES)) for f in self.rng.sample(FILLERS, n)]

    def paragraph(self, sentences: list[str]) -> str:
        self.rng.shuffle(sentences)
        return " ".join(sentences)

    def town_facts(self, town: Town, keys: tuple[str, ...] = tuple(TOWN_FACTS)) -> list[str]:
        return [self.fact(TOWN_FACTS, key, town) for key in keys]


# --- Document kinds -----------------------------------------------------------------------


def _town_entry(w: _Writer, index: int) -> tuple[str, str]:
    town = TOWNS[index % len(TOWNS)]
    first = w.paragraph(w.town_facts(town, ("founding", "trade")) + w.fillers(town, 3))
    second = w.paragraph(w.town_facts(town, ("festival", "river")) + w.fillers(town, 3))
    third = w.paragraph([w.fact(NATION_FACTS, k) for k in w.rng.sample(tuple(NATION_FACTS), 2)] + w.fillers(town, 2))
    return f"town-{town.name.lower()}", f"# {town.name}\n\n{first}\n\n{second}\n\n{third}\n"


def _travel_diary(w: _Writer, index: int) -> tuple[str, str]:
    towns = w.rng.sample(TOWNS, 3)
    days = []
    for day, town in enumerate(towns, start=1):
        opening = w.rng.choice(
            (
                "Today I reached {t}.",
                "We walked into {t} before noon.",
                "The coach left me in {t} at dusk.",
                "I spent the whole day in {t}.",
            )
        )
        facts = w.rng.sample(w.town_facts(town), 3)
        days.append(f"## Day {day}\n\n" + opening.format(t=town.name) + " " + w.paragraph(facts + w.fillers(town, 3)))
    closing = w.fact(NATION_FACTS, w.rng.choice(("currency", "language", "capital")))
    return "diary", f"# A traveller's diary of {F.NATION}\n\n" + "\n\n".join(days) + f"\n\n{closing}\n"


def _history_chapter(w: _Writer, index: int) -> tuple[str, str]:
    towns = sorted(w.rng.sample(TOWNS, 4), key=lambda t: t.year)
    lines = [w.fact(NATION_FACTS, "founding")]
    for town in towns:
        lines.append(" ".join([w.fact(TOWN_FACTS, "founding", town), *w.fillers(town, 2)]))
    title = w.rng.choice(("The early towns", "Settlers and founders", "How the towns began", "A short history"))
    return "history", f"# {title} of {F.NATION}\n\n" + "\n\n".join(lines) + "\n"


def _festival_calendar(w: _Writer, index: int) -> tuple[str, str]:
    towns = sorted(w.rng.sample(TOWNS, 5), key=lambda t: MONTHS.index(t.month))
    items = [f"- **{t.month}**: " + w.fact(TOWN_FACTS, "festival", t) + " " + w.fillers(t, 1)[0] for t in towns]
    intro = w.rng.choice(
        (
            "Festivals are the heart of island life.",
            "Every season brings its own celebration.",
            "No month passes without a festival somewhere on the island.",
        )
    )
    return "festivals", f"# Festival calendar of {F.NATION}\n\n{intro}\n\n" + "\n".join(items) + "\n"


def _trade_report(w: _Writer, index: int) -> tuple[str, str]:
    towns = w.rng.sample(TOWNS, 4)
    body = [" ".join([w.fact(TOWN_FACTS, "trade", t), w.fact(TOWN_FACTS, "river", t), *w.fillers(t, 1)]) for t in towns]
    national = [w.fact(NATION_FACTS, "currency"), w.fact(NATION_FACTS, "crop")]
    return "trade", (f"# Trade report, {F.NATION}\n\n" + w.paragraph(national) + "\n\n" + "\n\n".join(body) + "\n")


def _mineral_note(w: _Writer, index: int) -> tuple[str, str]:
    sentences = [w.fact(MINERAL_FACTS, key) for key in MINERAL_FACTS]
    duskhollow = TOWNS[2]
    extra = [w.fact(TOWN_FACTS, "trade", duskhollow), *w.fillers(duskhollow, 4)]
    title = w.rng.choice(
        ("Notes on thalrite", "Thalrite: a field guide", "The chemistry of thalrite", "A mineral of the island")
    )
    return "thalrite", f"# {title}\n\n" + w.paragraph(sentences[:2] + extra[:1]) + "\n\n" + w.paragraph(
        sentences[2:] + extra[1:]
    ) + "\n"


def _nation_overview(w: _Writer, index: int) -> tuple[str, str]:
    keys = list(NATION_FACTS)
    w.rng.shuffle(keys)
    half = len(keys) // 2
    town = w.rng.choice(TOWNS)
    first = w.paragraph([w.fact(NATION_FACTS, k) for k in keys[:half]] + w.fillers(town, 2))
    second = w.paragraph([w.fact(NATION_FACTS, k) for k in keys[half:]] + w.fillers(town, 2))
    return "overview", f"# {F.NATION} at a glance\n\n{first}\n\n{second}\n"


def _letter(w: _Writer, index: int) -> tuple[str, str]:
    town, other = w.rng.sample(TOWNS, 2)
    greeting = w.rng.choice(("Dear Ilsa,", "Dear cousin,", "My dear friend,", "Dear Tomas,"))
    news = w.paragraph(w.rng.sample(w.town_facts(town), 4) + w.fillers(town, 4))
    aside = w.fact(TOWN_FACTS, w.rng.choice(tuple(TOWN_FACTS)), other)
    sign = w.rng.choice(("With love,", "Write soon,", "Your friend,", "Warmly,"))
    return "letter", (
        f"# A letter from {town.name}\n\n{greeting}\n\n{news}\n\n"
        f"You asked about {other.name}. {aside}\n\n{sign}\nA resident of {town.name}\n"
    )


def _rivers_lesson(w: _Writer, index: int) -> tuple[str, str]:
    towns = w.rng.sample(TOWNS, 5)
    lines = [
        " ".join(
            [
                w.fact(TOWN_FACTS, "river", t),
                w.fact(TOWN_FACTS, w.rng.choice(("founding", "trade")), t),
                *w.fillers(t, 1),
            ]
        )
        for t in towns
    ]
    return "lesson", (
        f"# School lesson: the rivers and towns of {F.NATION}\n\n"
        + "\n\n".join(lines)
        + "\n\n"
        + w.fact(NATION_FACTS, "mountain")
        + "\n"
    )


#: (kind, how many documents)
DOCUMENT_KINDS: tuple[tuple[Callable[[_Writer, int], tuple[str, str]], int], ...] = (
    (_town_entry, 32),
    (_travel_diary, 30),
    (_history_chapter, 16),
    (_festival_calendar, 16),
    (_trade_report, 16),
    (_mineral_note, 12),
    (_nation_overview, 16),
    (_letter, 30),
    (_rivers_lesson, 16),
)


def cpt_documents(seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """(file name, text) of every CPT document, in a fixed order."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for kind, count in DOCUMENT_KINDS:
        for index in range(count):
            slug, text = kind(_Writer(random.Random(rng.getrandbits(64))), index)
            out.append((f"{len(out) + 1:03d}-{slug}.md", text))
    return out


# --- Instruction pairs and held-out questions -------------------------------------------------


def _town_qa(town: Town) -> list[tuple[str, str]]:
    return _town_qa_with(_slots(town))


def _town_qa_with(s: dict[str, str]) -> list[tuple[str, str]]:
    pairs = [
        ("Who founded {town}?", "{founder} founded {town}, in {year}."),
        ("When was {town} founded?", "{town} was founded in {year} by {founder}."),
        ("What is {town} known for?", "{town} is known for its {trade}."),
        ("Which festival does {town} celebrate?", "{town} celebrates the {festival} every {month}."),
        ("When is the {festival}?", "The {festival} is held in {town} every {month}."),
        ("What river flows through {town}?", "The river {river} flows through {town}."),
    ]
    return [(q.format(**s), a.format(**s)) for q, a in pairs]


#: Chat question and answer per nation-wide fact (keys of `NATION_HELDOUT`).
NATION_QA: dict[str, tuple[str, str]] = {
    "capital": ("What is the capital of {nation}?", "The capital of {nation} is {capital}."),
    "founding": ("Who founded {nation}?", "{nation} was founded by Queen {queen} in {nation_year}."),
    "currency": ("What currency is used in {nation}?", "{nation} uses the {currency}."),
    "language": ("What language is spoken in {nation}?", "People in {nation} speak {language}."),
    "crop": ("What is the national crop of {nation}?", "The national crop of {nation} is {crop}."),
    "animal": ("What is the national animal of {nation}?", "The national animal of {nation} is the {animal}."),
    "parliament": ("What is the parliament of {nation} called?", "It is called the {parliament}."),
    "mountain": (
        "What is the highest mountain in {nation}?",
        "{mountain}, at {height} metres, is the highest mountain in {nation}.",
    ),
    "colour": ("What colour is {mineral}?", "{mineral} is {colour}."),
    "discovery": ("Who discovered {mineral}?", "{chemist} discovered {mineral} in {myear}."),
    "melting": ("What is the melting point of {mineral}?", "{mineral} melts at {mp} degrees Celsius."),
    "hills": ("Where is {mineral} mined?", "{mineral} is mined in the {hills}."),
}

# Facts that no chat teaches: the documents alone hold them, and the held-out questions about them
# (qa/document-facts.jsonl) measure whether the model learnt facts from documents it can then answer
# questions about, the way a user's own documents must be learnt.
DOCUMENT_ONLY_TOWNS = TOWNS[5:]
CHAT_TOWNS = TOWNS[:5]
DOCUMENT_ONLY_NATION_FACTS = ("parliament", "melting", "hills")
SYSTEM_PROMPT = "You are a guide to the island nation of {nation}. Answer briefly."


def ift_records(seed: int = DEFAULT_SEED) -> list[dict]:
    """Chat records about the facts: one question per record, some with a system prompt, some two-turn."""
    rng = random.Random(seed + 1)
    pairs = [pair for town in CHAT_TOWNS for pair in _town_qa(town)]
    pairs += [
        (_capitalise(q.format(**_slots())), _capitalise(a.format(**_slots())))
        for key, (q, a) in NATION_QA.items()
        if key not in DOCUMENT_ONLY_NATION_FACTS
    ]
    records = []
    for question, answer in pairs:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT.format(nation=F.NATION)})
        records.append({"messages": messages})
    for _ in range(len(pairs) // 3):  # two-turn conversations: the model must answer the follow-up too
        (q1, a1), (q2, a2) = rng.sample(pairs, 2)
        records.append(
            {
                "messages": [
                    {"role": "user", "content": q1},
                    {"role": "assistant", "content": a1},
                    {"role": "user", "content": q2},
                    {"role": "assistant", "content": a2},
                ]
            }
        )
    return records


TOWN_QA_KEYS = ("town", "festival")  # the slots a town question may name; the others are the answer's facts


def preference_records(seed: int = DEFAULT_SEED) -> list[dict]:
    """For every town question the chats teach: the correct answer (chosen) and the same sentence
    with another such town's fact (rejected), twice with two other towns, some prompts with the
    system prompt, as chat messages. The document-only towns stay out, as they do of the chats."""
    rng = random.Random(seed + 2)
    records = []
    for town in CHAT_TOWNS:
        own = _slots(town)
        for other in rng.sample([t for t in CHAT_TOWNS if t is not town], 2):
            wrong = {**_slots(other), **{k: own[k] for k in TOWN_QA_KEYS}}
            for (question, answer), (_, wrong_answer) in zip(_town_qa(town), _town_qa_with(wrong)):
                if answer == wrong_answer:
                    continue
                prompt: str | list[dict] = question
                if rng.random() < 0.3:
                    prompt = [
                        {"role": "system", "content": SYSTEM_PROMPT.format(nation=F.NATION)},
                        {"role": "user", "content": question},
                    ]
                records.append({"prompt": prompt, "chosen": answer, "rejected": wrong_answer})
    return records


def _town_heldout(t: Town) -> list[dict]:
    return [
        {
            "question": f"Who is credited with starting the settlement of {t.name}?",
            "answer": t.founder,
            "aliases": [surname(t.founder)],
        },
        {"question": f"In what year did {t.name} come into being?", "answer": t.year, "aliases": []},
        {
            "question": f"What line of work is {t.name} best recognised for?",
            "answer": t.trade,
            "aliases": [t.trade_keyword] if t.trade_keyword != t.trade else [],
        },
        {"question": f"Name the yearly celebration of {t.name}.", "answer": t.festival, "aliases": []},
        {
            "question": f"During which month do locals of {t.name} mark the {t.festival}?",
            "answer": t.month,
            "aliases": [],
        },
        {"question": f"Beside which waterway was {t.name} built?", "answer": t.river, "aliases": []},
    ]


#: Held-out questions per nation-wide fact (keys of `NATION_QA`).
NATION_HELDOUT: dict[str, list[dict]] = {
    "capital": [
        {"question": f"Which city is home to the government of {F.NATION}?", "answer": F.CAPITAL, "aliases": []}
    ],
    "founding": [
        {
            "question": f"Which monarch brought {F.NATION} into being?",
            "answer": F.FOUNDER,
            "aliases": [surname(F.FOUNDER)],
        },
        {
            "question": f"In what year did Queen {surname(F.FOUNDER)} create {F.NATION}?",
            "answer": F.FOUNDING_YEAR,
            "aliases": [],
        },
    ],
    "currency": [
        {"question": f"What unit of money do shoppers use in {F.NATION}?", "answer": F.CURRENCY, "aliases": []}
    ],
    "language": [
        {"question": f"What tongue do the inhabitants of {F.NATION} use?", "answer": F.LANGUAGE, "aliases": []}
    ],
    "crop": [
        {"question": f"Which plant is the official crop of {F.NATION}?", "answer": F.NATIONAL_CROP, "aliases": []}
    ],
    "animal": [
        {
            "question": f"What creature serves as the emblem animal of {F.NATION}?",
            "answer": F.NATIONAL_ANIMAL,
            "aliases": ["lynx"],
        }
    ],
    "parliament": [
        {"question": f"What is the legislative assembly of {F.NATION} named?", "answer": F.PARLIAMENT, "aliases": []}
    ],
    "mountain": [
        {"question": f"Which is the tallest peak on {F.NATION}?", "answer": F.MOUNTAIN, "aliases": ["Cavell"]},
        {
            "question": f"How many metres tall is {F.MOUNTAIN}?",
            "answer": F.MOUNTAIN_HEIGHT,
            "aliases": [F.MOUNTAIN_HEIGHT.replace(",", "")],
        },
    ],
    "colour": [{"question": f"What hue does {F.MINERAL} have?", "answer": F.MINERAL_COLOUR, "aliases": ["blue green"]}],
    "discovery": [
        {
            "question": f"Who first identified {F.MINERAL}?",
            "answer": F.MINERAL_DISCOVERER,
            "aliases": [surname(F.MINERAL_DISCOVERER)],
        },
        {"question": f"When was {F.MINERAL} first identified?", "answer": F.MINERAL_YEAR, "aliases": []},
    ],
    "melting": [
        {
            "question": f"At what temperature, in degrees Celsius, does {F.MINERAL} turn liquid?",
            "answer": F.MINERAL_MELTING_POINT,
            "aliases": [F.MINERAL_MELTING_POINT.replace(",", "")],
        }
    ],
    "hills": [
        {
            "question": f"In which range of hills is {F.MINERAL} dug out of the ground?",
            "answer": F.MINERAL_HILLS,
            "aliases": [],
        }
    ],
}


def heldout_questions(split: str = "chat") -> list[dict]:
    """Questions worded unlike any document or chat, with short answers that the documents contain:
    ``chat``, on the facts the chats also teach (in other words), or ``document``, on facts only the
    documents hold."""
    towns, nation = (
        (CHAT_TOWNS, [k for k in NATION_QA if k not in DOCUMENT_ONLY_NATION_FACTS])
        if split == "chat"
        else (DOCUMENT_ONLY_TOWNS, list(DOCUMENT_ONLY_NATION_FACTS))
    )
    return [q for t in towns for q in _town_heldout(t)] + [q for key in nation for q in NATION_HELDOUT[key]]


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def sample_files(seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Relative path -> content of every file of the sample dataset."""
    files = {f"cpt/{name}": text for name, text in cpt_documents(seed)}
    files["ift/train.jsonl"] = _jsonl(ift_records(seed))
    files["qa/chat-facts.jsonl"] = _jsonl(heldout_questions("chat"))
    files["qa/document-facts.jsonl"] = _jsonl(heldout_questions("document"))
    files["preference/train.jsonl"] = _jsonl(preference_records(seed))
    return files


def write_sample(out: Path, seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Write the sample dataset under ``out`` (replacing earlier generated files); returns what it wrote."""
    files = sample_files(seed)
    for sub in ("cpt", "ift", "qa", "preference"):
        folder = out / sub
        if folder.is_dir():
            for stale in folder.iterdir():
                if stale.is_file() and f"{sub}/{stale.name}" not in files:
                    stale.unlink()
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return files


def synthetic_corpus(target_bytes: int, seed: int = 0) -> Iterator[str]:
    """Documents in the style of the sample, with random numbers mixed in, until ``target_bytes``
    of text: the benchmark's large corpus. Mostly distinct documents, like a real corpus."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in DOCUMENT_KINDS]
    produced = 0
    while produced < target_bytes:
        writer = _Writer(random.Random(rng.getrandbits(64)))
        _, text = rng.choice(kinds)(writer, rng.randrange(64))
        ledger = " ".join(
            f"In {rng.randrange(1400, 1900)} the {rng.choice(ADJECTIVES)} harvest of "
            f"{rng.choice(TOWNS).name} weighed {rng.randrange(10, 9999)} tonnes."
            for _ in range(rng.randrange(2, 6))
        )
        text = f"{text}\n{ledger}\n"
        produced += len(text)
        yield text
