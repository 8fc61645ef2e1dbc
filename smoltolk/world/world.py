"""The mini-world: a small, seeded story world with a latent state, fixed world knowledge and rules.

A story is four context sentences and an ending. Its latent state is a character (a name, with
"he" or "she"), the place the character is in, and the object the character holds. World
knowledge is fixed: every place (a *topic*) has three objects, and each object one action that is
only done in that place with that object ("then she stirred the soup with the spoon" needs the
kitchen and the spoon in hand). An ending is coherent when its action's preconditions hold in the
state the context leaves.

Grammatical minimal pairs (sBLIMP-style) reuse the world's words: subject-verb agreement across a
prepositional phrase ("the dogs near the lake run / runs"), determiner-noun agreement ("a pan /
a pans", "two pans / two pan") and argument structure ("she showed tom the pan / she laughed tom
the pan"). Everything is lowercase; text sentences end with ". ", transcripts have no punctuation.
The vocabulary is about 150 words. Everything is deterministic given a seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from smoltolk.defaults import CARRIER_STYLE_NAMES

# --------------------------------------------------------------------------------------------------
# Fixed world knowledge
# --------------------------------------------------------------------------------------------------

NAMES = {"tom": "he", "sam": "he", "ben": "he", "max": "he", "jack": "he",
         "anna": "she", "mia": "she", "lily": "she", "emma": "she", "kate": "she"}
OBJECT_PRONOUN = {"he": "him", "she": "her"}
ANIMALS = {"dog": "dogs", "cat": "cats", "bird": "birds", "duck": "ducks", "frog": "frogs"}
VERBS = {"run": "runs", "sleep": "sleeps", "sit": "sits", "jump": "jumps", "play": "plays"}  # plural: singular
FEELINGS = ["happy", "tired", "hungry", "calm", "glad"]
DAYS = ["warm", "cold", "sunny", "quiet", "long"]
GIVE_VERBS = ["showed", "gave", "handed"]  # ditransitive: "she showed tom the pan"
INTRANSITIVE_VERBS = ["laughed", "smiled", "slept", "waited"]  # never take two objects


@dataclass(frozen=True)
class Action:
    place: str
    obj: str  # the object the action needs in hand
    phrase: str  # the ending's verb phrase, mentioning the object


@dataclass(frozen=True)
class Place:
    name: str
    objects: tuple[str, ...]
    plurals: tuple[str, ...]
    actions: tuple[Action, ...]


def _place(name: str, spec: list[tuple[str, str, str]]) -> Place:
    return Place(name, tuple(o for o, _, _ in spec), tuple(p for _, p, _ in spec),
                 tuple(Action(name, o, phrase) for o, _, phrase in spec))


PLACES: tuple[Place, ...] = (
    _place("kitchen", [
        ("pan", "pans", "fried an egg with the pan"),
        ("spoon", "spoons", "stirred the soup with the spoon"),
        ("knife", "knives", "cut the bread with the knife"),
    ]),
    _place("garden", [
        ("shovel", "shovels", "dug a hole with the shovel"),
        ("hose", "hoses", "watered the roses with the hose"),
        ("rake", "rakes", "raked the leaves with the rake"),
    ]),
    _place("lake", [
        ("boat", "boats", "sailed across the water in the boat"),
        ("rod", "rods", "caught a fish with the rod"),
        ("towel", "towels", "dried off with the towel after a swim"),
    ]),
    _place("library", [
        ("book", "books", "read the book in a quiet corner"),
        ("pen", "pens", "wrote a letter with the pen"),
        ("map", "maps", "studied the map of the old town"),
    ]),
    _place("beach", [
        ("ball", "balls", "kicked the ball along the sand"),
        ("bucket", "buckets", "built a castle with the bucket"),
        ("kite", "kites", "flew the kite over the waves"),
    ]),
    _place("farm", [
        ("brush", "brushes", "groomed the horse with the brush"),
        ("basket", "baskets", "gathered the eggs in the basket"),
        ("rope", "ropes", "tied the goat with the rope"),
    ]),
    _place("park", [
        ("bike", "bikes", "rode the bike around the pond"),
        ("frisbee", "frisbees", "threw the frisbee to a friend"),
        ("sandwich", "sandwiches", "ate the sandwich on a bench"),
    ]),
    _place("workshop", [
        ("hammer", "hammers", "hit the nail with the hammer"),
        ("drill", "drills", "made a hole with the drill"),
        ("glue", "glues", "fixed the chair with the glue"),
    ]),
)
PLACE_BY_NAME = {p.name: p for p in PLACES}
ACTIONS: tuple[Action, ...] = tuple(a for p in PLACES for a in p.actions)


def words(text: str) -> list[str]:
    """The words of a text (lowercase, punctuation dropped), as in a transcript."""
    return re.findall(r"[a-z']+", text.lower())


def _shared_words() -> set[str]:
    shared = set(NAMES) | set(OBJECT_PRONOUN.values()) | set(NAMES.values()) | set(ANIMALS) | set(ANIMALS.values())
    shared |= set(VERBS) | set(VERBS.values()) | set(FEELINGS) | set(DAYS) | set(GIVE_VERBS) | set(INTRANSITIVE_VERBS)
    shared |= set(words(" ".join(TEMPLATE_WORDS)))
    frames = NEUTRAL_NOUN + NEUTRAL_VERB + [f for fs in NEUTRAL_OTHER.values() for f in fs]
    blank = {"name": "", "pron": "", "other": "", "word": ""}
    shared |= set(words(" ".join(f.format(**blank) for f in frames))) - set(NEUTRAL_OTHER)
    return shared


def topic_words(place: str) -> set[str]:
    """Words that belong to one topic only: its place, objects (and plurals) and action phrases' own words."""
    def raw(p: Place) -> set[str]:
        return {p.name, *p.objects, *p.plurals, *(w for a in p.actions for w in words(a.phrase))}

    others = set().union(*(raw(p) for p in PLACES if p.name != place))
    return raw(PLACE_BY_NAME[place]) - others - _shared_words()


# --------------------------------------------------------------------------------------------------
# Stories: latent state, rules, generation
# --------------------------------------------------------------------------------------------------

TEMPLATE_WORDS = ["went to the", "picked up the", "saw a there and picked it up", "found a and took it",
                  "near the", "was there too", "it was a day", "there were two there", "felt", "then",
                  "said the word", "heard the word", "the word was"]

# Carrier utterances: one word in a neutral frame, so that a word can be heard in speech without
# any of its topic's associations (see :class:`Split`).
CARRIERS = ["{name} said the word {word}", "{name} heard the word {word}", "the word was {word}"]
# The "echo" style says the word twice (a second person repeats it). Where an interleaved sample switches
# modality between the two mentions, the training data pairs the word's text with its sound, which the plain
# frames never do (their context says nothing about which word follows): a lever on the world.
ECHO_CARRIERS = ["{name} said the word {word} and {other} said {word}",
                 "{name} heard the word {word} and said {word}"]
# The "neutral" style hears the word in an everyday sentence, as a story word is heard in many contexts, in a
# frame that fits its part of speech and says nothing of its topic ("kate liked the soup", "tom stirred it
# slowly"): the paper's setting, where a held-out story's words are heard in speech in other contexts. The
# frames' own words belong to no topic (tested), so the utterance still holds one held-out word.
NEUTRAL_NOUN = ["{name} liked the {word}", "{name} looked at the {word}", "{name} talked about the {word}",
                "{pron} thought about the {word}"]
NEUTRAL_VERB = ["{name} {word} it slowly", "{pron} {word} it again", "{name} {word} it"]
NEUTRAL_OTHER = {  # the topic words that are neither nouns nor an action's verb, each in a frame of its own
    "an": ["{name} had an idea"], "across": ["{name} walked across it"], "after": ["{name} came after {other}"],
    "off": ["{name} walked off"], "of": ["{name} thought of {other}"], "old": ["{name} was old"],
    "along": ["{name} walked along"], "over": ["{name} walked over"], "around": ["{name} walked around"],
    "on": ["{name} walked on"],
}
CARRIER_STYLES = dict(zip(CARRIER_STYLE_NAMES, (CARRIERS, ECHO_CARRIERS, NEUTRAL_NOUN), strict=True))


def _neutral_frames(word: str) -> list[str]:
    if word in NEUTRAL_OTHER:
        return NEUTRAL_OTHER[word]
    if word in {a.phrase.split()[0] for a in ACTIONS}:
        return NEUTRAL_VERB
    return NEUTRAL_NOUN


def carrier(rng: np.random.Generator, word: str, style: str = "plain") -> str:
    """``word`` in a frame without its topic (no place, object or action around it); ``style`` "echo" says it
    twice, "neutral" uses it in an everyday sentence that fits its part of speech."""
    if style not in CARRIER_STYLES:
        raise ValueError(f"unknown carrier style {style!r}; expected one of {sorted(CARRIER_STYLES)}")
    names = sorted(NAMES)
    frames = _neutral_frames(word) if style == "neutral" else CARRIER_STYLES[style]
    frame, name = _pick(rng, frames), _pick(rng, names)
    other = _pick(rng, [n for n in names if n != name]) if style != "plain" else ""  # plain draws as before
    return frame.format(name=name, pron=NAMES[name], other=other, word=word)


@dataclass
class State:
    name: str
    pronoun: str
    place: str
    held: str


@dataclass
class Story:
    id: str
    topic: str  # the place: the story's knowledge topic
    state: State
    context: list[str]  # four sentences (no final period)
    ending: Action

    def ending_sentence(self, action: Action | None = None) -> str:
        return f"then {self.state.pronoun} {(action or self.ending).phrase}"

    def text(self, action: Action | None = None) -> str:
        """The whole story as text: sentences joined by ". ", ending included."""
        return ". ".join([*self.context, self.ending_sentence(action)]) + "."

    def context_text(self) -> str:
        return ". ".join(self.context) + "."


def coherent(state: State, action: Action) -> bool:
    """The world's rule: an action happens in its own place with its own object in hand."""
    return action.place == state.place and action.obj == state.held


def read_state(context: str) -> State:
    """The latent state a written context leaves: who went where (sentence 1) and took what (sentence 2)."""
    sentences = [s.strip() for s in context.strip().rstrip(".").split(". ")]
    first, took = words(sentences[0]), words(sentences[1]) if len(sentences) > 1 else []
    if len(first) != 5 or first[1:4] != ["went", "to", "the"] or first[0] not in NAMES or first[4] not in PLACE_BY_NAME:
        raise ValueError(f"not a mini-world context (expected '<name> went to the <place>. ...'): {context!r}")
    held = [w for w in took if w in PLACE_BY_NAME[first[4]].objects]
    if len(held) != 1:
        raise ValueError(f"not a mini-world context (sentence 2 should take one object of the {first[4]}): {context!r}")
    return State(first[0], NAMES[first[0]], first[4], held[0])


def read_action(ending: str) -> tuple[str, Action]:
    """(pronoun, action) of an ending sentence ``then <he|she> <action phrase>``."""
    ws = words(ending)
    phrase = " ".join(ws[2:])
    action = next((a for a in ACTIONS if a.phrase == phrase), None)
    if len(ws) < 3 or ws[0] != "then" or ws[1] not in OBJECT_PRONOUN or action is None:
        raise ValueError(f"not a mini-world ending (expected 'then <he|she> <action>'): {ending!r}")
    return ws[1], action


def judge(context: str, ending: str) -> bool:
    """Whether a written ending is coherent with a written context under the world's rules
    (the right pronoun, the action's place and its object in hand)."""
    state = read_state(context)
    pronoun, action = read_action(ending)
    return pronoun == state.pronoun and coherent(state, action)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def make_story(rng: np.random.Generator, place: str, story_id: str) -> Story:
    """A coherent story in ``place``: go there, take an object, a filler, a feeling, then use the object."""
    p = PLACE_BY_NAME[place]
    name = _pick(rng, sorted(NAMES))
    pron = NAMES[name]
    other = _pick(rng, [n for n in sorted(NAMES) if n != name])
    k = int(rng.integers(len(p.objects)))
    obj = p.objects[k]
    took = _pick(rng, [f"{pron} picked up the {obj}", f"{pron} saw a {obj} there and picked it up",
                       f"{pron} found a {obj} and took it"])
    animal = _pick(rng, sorted(ANIMALS))
    verb = _pick(rng, sorted(VERBS))
    other_obj = p.objects[(k + 1 + int(rng.integers(len(p.objects) - 1))) % len(p.objects)]
    other_pl = p.plurals[p.objects.index(other_obj)]
    filler = _pick(rng, [f"the {ANIMALS[animal]} near the {place} {verb}",
                         f"the {animal} near the {place} {VERBS[verb]}", f"{other} was there too",
                         f"it was a {_pick(rng, DAYS)} day",
                         f"there were two {other_pl} there", f"{other} {_pick(rng, INTRANSITIVE_VERBS)}"])
    feeling = _pick(rng, [f"{pron} felt {_pick(rng, FEELINGS)}",
                          f"{pron} {_pick(rng, GIVE_VERBS)} {other} the {obj}",
                          f"{other} {_pick(rng, GIVE_VERBS)} {OBJECT_PRONOUN[pron]} a smile"])
    context = [f"{name} went to the {place}", took, filler, feeling]
    return Story(story_id, place, State(name, pron, place, obj), context, p.actions[k])


def hard_negative(rng: np.random.Generator, story: Story, places: list[str]) -> tuple[Action, str]:
    """An ending that breaks the world's logic: an action of another place (among ``places``), or an
    action of this place that needs an object the character does not hold. Returns (action, kind)."""
    if rng.random() < 0.5:
        other = _pick(rng, [p for p in places if p != story.topic])
        return _pick(rng, PLACE_BY_NAME[other].actions), "wrong_place"
    return _pick(rng, [a for a in PLACE_BY_NAME[story.topic].actions if a.obj != story.state.held]), "wrong_object"


# --------------------------------------------------------------------------------------------------
# Grammatical minimal pairs
# --------------------------------------------------------------------------------------------------


@dataclass
class MinimalPair:
    id: str
    type: str
    subtype: str
    topic: str
    good: str
    bad: str


def minimal_pairs(rng: np.random.Generator, place: str, n: int, prefix: str) -> list[MinimalPair]:
    """``n`` grammatical / ungrammatical sentence pairs on ``place``'s words, one word apart."""
    p = PLACE_BY_NAME[place]
    out = []
    for i in range(n):
        kind = i % 5
        name = _pick(rng, sorted(NAMES))
        pron = NAMES[name]
        other = _pick(rng, [m for m in sorted(NAMES) if m != name])
        k = int(rng.integers(len(p.objects)))
        obj, obj_pl = p.objects[k], p.plurals[k]
        animal, verb = _pick(rng, sorted(ANIMALS)), _pick(rng, sorted(VERBS))
        if kind == 0:
            typ, sub = "agreement", "plural_subject"
            subject = f"the {ANIMALS[animal]} near the {place}"
            good, bad = f"{subject} {verb}", f"{subject} {VERBS[verb]}"
        elif kind == 1:
            typ, sub = "agreement", "singular_subject"
            good, bad = f"the {animal} near the {place} {VERBS[verb]}", f"the {animal} near the {place} {verb}"
        elif kind == 2:
            typ, sub = "determiner_noun", "a_singular"
            good, bad = f"{pron} saw a {obj} there", f"{pron} saw a {obj_pl} there"
        elif kind == 3:
            typ, sub = "determiner_noun", "two_plural"
            good, bad = f"there were two {obj_pl} there", f"there were two {obj} there"
        else:
            typ, sub = "argument_structure", "ditransitive"
            give, intr = _pick(rng, GIVE_VERBS), _pick(rng, INTRANSITIVE_VERBS)
            good, bad = f"{name} {give} {other} the {obj}", f"{name} {intr} {other} the {obj}"
        out.append(MinimalPair(f"{prefix}{i:04d}", typ, sub, place, good, bad))
    return out


# --------------------------------------------------------------------------------------------------
# The knowledge split
# --------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Topics heard in speech (and interleaved data) and topics known from text only (held out).

    What is held out is a topic's *associations* (its place, objects and actions together), not
    its words: a held-out word occurs in speech only alone, in a carrier utterance ("kate said the
    word drill"), never beside another word of its topic. The units of a word never heard at all
    could not be predicted by any model, so cross-modal items on it would test guessing, not the
    transfer of what the backbone learned in text. See :func:`split_violations` for the rule.
    """

    heard: list[str]
    held_out: list[str]
    held_out_words: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def make(cls, seed: int, held_out: list[str] | None = None) -> Split:
        """Half the places held out, drawn by ``seed``, or the places named in ``held_out``."""
        names = [p.name for p in PLACES]
        if held_out is None:
            order = np.random.default_rng([seed, 7]).permutation(len(PLACES))
            held = sorted(names[int(i)] for i in order[len(names) // 2:])
        else:
            unknown = sorted(set(held_out) - set(names))
            if unknown or not 0 < len(set(held_out)) < len(names):
                raise ValueError(f"held_out: expected some but not all of {names}, got {list(held_out)}")
            held = sorted(set(held_out))
        return cls(sorted(set(names) - set(held)), held, {t: sorted(topic_words(t)) for t in held})

    def topic_of(self) -> dict[str, str]:
        """Held-out word -> its topic."""
        return {w: t for t, ws in self.held_out_words.items() for w in ws}


def split_violations(split: Split, transcripts: list[tuple[str, str]], min_gap_words: int = 0) -> list[str]:
    """Where the speech corpus ``(id, text)``, in corpus order, breaks the split (empty: it holds).

    Two rules: an utterance holds at most one distinct held-out word (said once, or twice by an echo
    carrier; so no held-out association is ever spoken within an utterance); and two utterances with
    words of the same held-out topic are at least ``min_gap_words`` words apart, counted cyclically as
    the samplers read the corpus (so no training sample spanning fewer words, speech or interleaved,
    holds two of them). A sample of ``n`` tokens spans at most ``n`` words, since every word costs at
    least one token.
    """
    topic_of = split.topic_of()
    bad = []
    last: dict[str, tuple[str, int]] = {}  # topic -> (utterance id, word position after it)
    first: dict[str, tuple[str, int]] = {}
    pos = 0
    for rec_id, text in transcripts:
        ws = words(text)
        hits = list(dict.fromkeys(w for w in ws if w in topic_of))  # distinct, in reading order
        if len(hits) > 1:
            bad.append(f"{rec_id}: {len(hits)} held-out words in one utterance: "
                       + ", ".join(f"{w} ({topic_of[w]})" for w in hits))
        for topic in {topic_of[w] for w in hits}:
            if topic in last and pos - last[topic][1] < min_gap_words:
                bad.append(f"{rec_id}: {topic} words only {pos - last[topic][1]} words after {last[topic][0]} "
                           f"(at least {min_gap_words})")
            last[topic] = (rec_id, pos + len(ws))
            first.setdefault(topic, (rec_id, pos))
        pos += len(ws)
    for topic, (rec_id, start) in first.items():  # wrap-around: the last mention, then the first again
        gap = pos - last[topic][1] + start
        if last[topic][0] != rec_id and gap < min_gap_words:
            bad.append(f"{rec_id}: {topic} words only {gap} words after {last[topic][0]} (wrapping around the "
                       f"corpus; at least {min_gap_words})")
    return bad


def vocabulary() -> list[str]:
    """Every word the world can produce (stories, endings, minimal pairs)."""
    vocab = _shared_words() | {"then", "a", "smile"}
    for p in PLACES:
        vocab |= {p.name, *p.objects, *p.plurals, *(w for a in p.actions for w in words(a.phrase))}
    return sorted(vocab)
