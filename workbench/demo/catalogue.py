"""A small passage catalogue written for the search demo: one topic per passage, with queries whose answer is clear.

The build writes it next to the ``search`` pipeline file as ``search-catalogue.json``
(``{"passages": [{"id", "topic", "text"}, ...], "queries": [{"query", "answer"}, ...]}``),
so clients and tests read the same list the demo ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PASSAGES", "QUERIES", "catalogue_data", "load_catalogue", "write_catalogue"]

#: ``(topic, text)`` of each passage; its id is its index.
PASSAGES: list[tuple[str, str]] = [
    ("volcanoes", "Volcanoes erupt when molten rock called magma rises through cracks in the Earth's crust and "
                  "escapes as lava, ash and gas."),
    ("photosynthesis", "Plants use sunlight, water and carbon dioxide to make sugar in their leaves, releasing "
                       "oxygen: this is photosynthesis."),
    ("bread", "To bake bread, mix flour, water, yeast and salt, knead the dough, let it rise, then bake it in a "
              "hot oven."),
    ("bicycles", "Keep a bicycle chain clean and oiled, and check the tyre pressure and the brakes before a long "
                 "ride."),
    ("chess", "In chess, each player starts with sixteen pieces, and the game is won by checkmating the opponent's "
              "king."),
    ("coffee", "Coffee beans are the roasted seeds of a cherry-like fruit; grinding them just before brewing keeps "
               "the aroma."),
    ("tides", "Ocean tides rise and fall twice a day, pulled mainly by the gravity of the Moon and, less, of the "
              "Sun."),
    ("vaccines", "A vaccine trains the immune system to recognise a virus or bacterium, so the body fights off a "
                 "later infection."),
    ("interest rates", "When a central bank raises interest rates, loans and mortgages cost more and inflation "
                       "tends to slow."),
    ("password security", "Use a long, unique password for every account and turn on two-factor authentication "
                          "to keep attackers out."),
    ("honeybees", "Honeybees collect nectar from flowers and turn it into honey, pollinating crops as they go."),
    ("marathon training", "Training for a marathon means building up weekly mileage slowly, with one long run "
                          "each week and rest days."),
    ("black holes", "A black hole is a region of space where gravity is so strong that not even light can "
                    "escape."),
    ("recycling", "Rinse plastic bottles and cans and sort paper from glass so the recycling plant can reuse the "
                  "materials."),
    ("guitar", "To tune a guitar, turn the pegs until each of the six strings matches its note, starting from "
               "the low E."),
    ("sleep", "Adults need seven to nine hours of sleep a night; a regular bedtime and a dark room help you fall "
              "asleep."),
    ("rainforests", "Tropical rainforests hold more than half of the world's plant and animal species and are "
                    "cleared for farming."),
    ("electric cars", "Electric cars run on batteries charged from the grid and produce no exhaust while "
                      "driving."),
    ("roman empire", "The Roman Empire built roads, aqueducts and cities across Europe before the western half "
                     "fell in 476."),
    ("dinosaurs", "Dinosaurs ruled the Earth for over 160 million years until an asteroid impact wiped most of "
                  "them out."),
    ("tea", "Green and black tea come from the same plant; black tea leaves are oxidised before they are "
            "dried."),
    ("earthquakes", "Earthquakes happen when tectonic plates slip past each other and release energy as seismic "
                    "waves."),
    ("compilers", "A compiler translates source code written by programmers into machine code that the "
                  "processor can run."),
    ("gardening", "Tomatoes grow best in full sun, in rich soil, watered deeply at the roots a few times a "
                  "week."),
    ("football", "A football match lasts ninety minutes, and a team scores by putting the ball into the "
                 "opponent's net."),
    ("antarctica", "Antarctica is the coldest continent, covered by an ice sheet that holds most of the world's "
                   "fresh water."),
    ("stock markets", "Shares of a company are bought and sold on a stock exchange, and their price moves with "
                      "supply and demand."),
    ("solar panels", "Solar panels turn sunlight into electricity using photovoltaic cells made of silicon."),
    ("cats", "Cats sleep for most of the day, groom themselves often and purr when they are content."),
    ("knitting", "Knitting makes fabric from yarn by pulling loops through other loops with two needles."),
    ("pyramids", "The pyramids of Giza were built as tombs for Egyptian pharaohs more than four thousand years "
                 "ago."),
    ("first aid", "For a minor burn, cool the skin under cold running water for twenty minutes and cover it "
                  "loosely."),
]

#: Queries whose best passage is clear, with its id (the index in :data:`PASSAGES`).
QUERIES: list[tuple[str, int]] = [
    ("why do volcanoes erupt with lava", 0),
    ("how do plants make oxygen from sunlight", 1),
    ("recipe for baking bread with yeast", 2),
    ("what is a black hole in space", 12),
    ("how should I treat a small burn on my hand", 31),
    ("what causes earthquakes and seismic waves", 21),
]


def catalogue_data() -> dict[str, Any]:
    """The catalogue as plain data (what the file holds)."""
    return {"passages": [{"id": i, "topic": topic, "text": text} for i, (topic, text) in enumerate(PASSAGES)],
            "queries": [{"query": query, "answer": answer} for query, answer in QUERIES]}


def write_catalogue(path: Path) -> Path:
    """Write the catalogue as JSON to ``path``."""
    path.write_text(json.dumps(catalogue_data(), indent=1) + "\n")
    return path


def load_catalogue(path: Path) -> dict[str, Any]:
    """The catalogue written by :func:`write_catalogue`."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data
