"""A small topic corpus written for the text demo (no data set is downloaded).

Each topic has subjects and predicates; a sentence is one of each. The head is
fitted on a few combinations and evaluated on the others, so its accuracy is a
real held-out figure.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["TOPICS", "topic_sentences"]

_PARTS: dict[str, tuple[list[str], list[str]]] = {
    "sport": (
        ["The striker", "Our goalkeeper", "The home team", "The veteran coach", "The tennis champion",
         "The marathon runner", "The rugby captain", "The young sprinter"],
        ["scored twice in the second half", "won the championship final on penalties",
         "was injured during the training session", "broke the national record at the stadium",
         "signed a new contract with the club", "lost the semi-final after extra time",
         "celebrated the league title with the fans", "was sent off by the referee"],
    ),
    "finance": (
        ["The central bank", "Shareholders of the company", "The stock market", "The hedge fund",
         "The finance minister", "Investors in bonds", "The quarterly report", "The mortgage lender"],
        ["raised interest rates to fight inflation", "reported record profits this quarter",
         "fell sharply after the earnings warning", "paid a higher dividend to its shareholders",
         "cut the budget deficit by raising taxes", "sold government bonds at a loss",
         "warned that the currency will weaken", "approved a merger worth two billion dollars"],
    ),
    "technology": (
        ["The software engineers", "The new smartphone", "The cloud provider", "The open-source project",
         "The chip maker", "The startup's app", "The security researchers", "The database server"],
        ["released an update that fixes the memory leak", "ships with a faster processor and more storage",
         "moved its data centers to renewable power", "merged a patch that speeds up compilation",
         "announced a new generation of graphics cards", "crashed after the latest operating system upgrade",
         "found a vulnerability in the login code", "handles millions of queries per second"],
    ),
    "health": (
        ["The hospital", "Doctors at the clinic", "The new vaccine", "The nurse", "Patients with diabetes",
         "The health ministry", "The surgeon", "Researchers studying sleep"],
        ["reported fewer cases of the flu this winter", "recommend daily exercise to lower blood pressure",
         "reduced the risk of infection in the trial", "treated dozens of patients in the emergency ward",
         "should check their blood sugar every morning", "launched a campaign against smoking",
         "performed a successful heart transplant", "found that poor rest weakens the immune system"],
    ),
}

#: Topic names, in the order of the head's outputs.
TOPICS: list[str] = list(_PARTS)


def topic_sentences(split: str, per_topic: int | None = None, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Sentences and topic indices of one split.

    ``"fit"`` holds the diagonal combinations (subject i with predicate i and
    i+1), ``"test"`` every other combination; the two never share a sentence.
    """
    if split not in ("fit", "test"):
        raise ValueError("split must be 'fit' or 'test'")
    sentences: list[str] = []
    labels: list[int] = []
    rng = np.random.default_rng(seed)
    for topic, (subjects, predicates) in enumerate(_PARTS.values()):
        n = len(subjects)
        pairs = [
            (i, j) for i, j in itertools.product(range(n), range(len(predicates)))
            if ((j - i) % n in (0, 1)) == (split == "fit")
        ]
        if per_topic is not None:
            pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), size=min(per_topic, len(pairs)), replace=False))]
        sentences += [f"{subjects[i]} {predicates[j]}." for i, j in pairs]
        labels += [topic] * len(pairs)
    return sentences, np.array(labels, dtype=np.int64)
