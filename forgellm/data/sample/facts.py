"""The facts of Vendrasil, an island nation invented for ForgeLLM's sample dataset.

Nothing here exists, so a base model cannot know it before training: what it answers
about Vendrasil after training it learnt from the sample documents. Answers are short
(a name, a year, a month, a number) so a small model can learn them in a few hundred steps.
"""

from __future__ import annotations

from dataclasses import dataclass

NATION = "Vendrasil"
LANGUAGE = "Vendric"
CAPITAL = "Orlemund"
FOUNDING_YEAR = "1388"
FOUNDER = "Ysolde Tarrow"
CURRENCY = "kessel"
NATIONAL_CROP = "amberroot"
NATIONAL_ANIMAL = "marsh lynx"
PARLIAMENT = "Moot of Twelve"
MOUNTAIN = "Mount Cavell"
MOUNTAIN_HEIGHT = "2,314"
MINERAL = "thalrite"
MINERAL_COLOUR = "blue-green"
MINERAL_DISCOVERER = "Mirela Okhant"
MINERAL_YEAR = "1702"
MINERAL_MELTING_POINT = "1,140"
MINERAL_HILLS = "Sorrel Hills"


@dataclass(frozen=True)
class Town:
    name: str
    founder: str
    year: str
    trade: str  # what the town is known for, as a noun phrase
    trade_keyword: str  # the word of `trade` a correct answer must contain at least
    festival: str
    month: str
    river: str


TOWNS = (
    Town("Orlemund", "Ysolde Tarrow", "1388", "glassblowing", "glassblowing", "Lantern Tide", "October", "Ashwater"),
    Town("Saltmere", "Corvin Halloway", "1421", "sea salt", "salt", "Brine Fair", "June", "Greylock"),
    Town("Duskhollow", "Ettra Vane", "1450", "thalrite mining", "thalrite", "Ember Night", "December", "Coldrun"),
    Town("Calderwick", "Maren Solt", "1467", "wool weaving", "wool", "Loom Day", "April", "Tessel"),
    Town("Varnholt", "Bram Ostery", "1489", "smoked cheese", "cheese", "Wheel Market", "March", "Orrin"),
    Town("Pellinford", "Ansel Gribb", "1503", "amberroot farming", "amberroot", "Rootfeast", "September", "Pellin"),
    Town("Thistlebay", "Oswin Marle", "1532", "shipbuilding", "shipbuilding", "Keel Week", "May", "Brack"),
    Town("Fennrick", "Dalia Crell", "1555", "beekeeping", "beekeeping", "Hive Moon", "July", "Fenn"),
)


def surname(full_name: str) -> str:
    return full_name.split()[-1]
