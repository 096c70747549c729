"""Phone inputs as clinics hold them, and libphonenumber's reading of each (the oracle).

Numbers are drawn valid for Canada, the USA, France and Morocco, then written every way
the clinical data shows: national and international, spaces, dots, dashes, parentheses,
trunk 0 or 1, a redundant (0) after the country code, 00 and 011 prefixes, another
country's number, extensions (x, ext., #, poste), Arabic-Indic and full-width digits;
plus junk that must never become a number.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import phonenumbers as pn
import psycopg
from phonenumbers import PhoneNumberFormat

COUNTRIES = {"Canada": "CA", "USA": "US", "France": "FR", "Morocco": "MA"}
IDD = {"CA": "011", "US": "011", "FR": "00", "MA": "00"}
# Every character of Unicode's space separators (category Zs), from Python's tables.
SPACE_SEPARATORS = [
    chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Zs" and chr(c) != " "
]
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789+", "".join(chr(0xFF10 + i) for i in range(10)) + "\uff0b")
# Regions whose numbers patients also give (libphonenumber decides what is valid).
ABROAD = [
    "GB",
    "DE",
    "IT",
    "BE",
    "CH",
    "ES",
    "DZ",
    "TN",
    "SN",
    "JP",
    "BR",
    "AR",
    "MX",
    "RU",
    "KZ",
    "EH",
    "JM",
    "PR",
    "AU",
    "IN",
    "CN",
    "SA",
    "AE",
    "NL",
    "PT",
    "HT",
    "CM",
    "CI",
]
FUZZ_CHARS = "0123456789" * 4 + "   +-.()/#xX;,=etpos\u00a0\u2013"
JUNK = [
    "N/A",
    "n/a",
    "none",
    "-",
    "+",
    "++",
    "555-01",
    "12",
    "1",
    "+1",
    "+33",
    "+212",
    "+15145550199123",
    "0000000000",
    "unknown",
    "call the front desk",
    "pas de téléphone",
    "لا يوجد",
    "TBD",
    "x123",
    "ext. 45",
    "#",
    "()",
    "00",
    "011",
    "+0 123 456 789",
    "514-555-01999",
    "06 12 34",
    "+33 6 12 34 56 78 90 12",
    "9999",
    "(514) 555-019",
    "+ +33 6 12 34 56 78",
    "33+612345678",
    "tel",
    "Tel: ",
    "1-800-FLOWERS",
    "+44",
    "0033",
    "+000 5145550199",
    "5145550199 / 4165550123",
    "06.12.34.56.78 (domicile)",
    "\u00a0",
]


@dataclass(frozen=True)
class Case:
    country: str  # the patient's country
    raw: str  # as written in the record
    e164: str | None  # libphonenumber's E.164, None when it reads no valid number
    extension: str | None


def valid_number(region: str, rng: random.Random) -> pn.PhoneNumber:
    """A random number libphonenumber considers valid for ``region``."""
    metadata = pn.PhoneMetadata.metadata_for_region(region)
    lengths = list(metadata.general_desc.possible_length)
    code = metadata.country_code
    while True:
        length = rng.choice(lengths)
        digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 1))
        number = pn.PhoneNumber(country_code=code, national_number=int(digits))
        if pn.is_valid_number_for_region(number, region):
            return number


def oracle(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """libphonenumber's E.164 and extension, or (None, None) for no valid number.

    'poste' (French for extension) is unknown to it, so it is asked with 'ext.'. The text
    is read after Unicode NFKC, as the database reads it (typographic spaces, full-width
    digits).
    """
    asked = re.sub(
        r"\s*poste\s*", " ext. ", unicodedata.normalize("NFKC", raw), flags=re.IGNORECASE
    )
    try:
        number = pn.parse(asked, region)
    except pn.NumberParseException:
        return None, None
    if not pn.is_valid_number(number):
        return None, None
    return pn.format_number(number, PhoneNumberFormat.E164), number.extension or None


def spellings(number: pn.PhoneNumber, region: str, rng: random.Random) -> list[str]:
    national = pn.format_number(number, PhoneNumberFormat.NATIONAL)
    international = pn.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    e164 = pn.format_number(number, PhoneNumberFormat.E164)
    nsn = pn.national_significant_number(number)
    code = str(number.country_code)
    plain = re.sub(r"\D", "", national)
    found = [
        national,
        international,
        e164,
        plain,
        re.sub(r"[\s()-]+", ".", national).strip("."),
        re.sub(r"[\s().]+", "-", national).strip("-"),
        f"{IDD[region]} {code} {nsn}",
        f"00{code}{nsn}",
        f"{IDD[region]}-{code}-{nsn[:3]}-{nsn[3:]}",
    ]
    if code == "1":
        found += [f"1-{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}", f"1 ({nsn[:3]}) {nsn[3:6]} {nsn[6:]}"]
    else:
        found += [
            f"+{code} (0){nsn}",
            f"+{code} 0{nsn[0]} {nsn[1:]}",
            f"0{nsn}",
            f"+{code} (0) {national[1:]}",
        ]
    found += [
        f"Tel: {national}",
        f"tel:{e164}",
        national.replace(" ", "\u00a0"),
        national.replace("-", "\u2013"),
        f"{national}.",
        f"{international} (cell)",
        f"({national})",
        f"+{code}.{nsn}",
        f"+ {code} {nsn}",
        f"0{IDD[region]}{code}{nsn}",
        f"{code} {nsn}",
        f"{code}{nsn}",
    ]
    extension = str(rng.randint(1, 9999))
    found += [
        f"{e164};ext={extension}",
        f"{national} EXT.{extension}",
        f"{national} extension {extension}",
        f"{national}, x {extension}",
        f"{national} #{extension}#",
        f"{national},,{extension}",
        f"{national} Poste: {extension}",
        f"{national} x{extension}",
        f"{national} ext. {extension}",
        f"{international} #{extension}",
        f"{national} poste {extension}",
        f"{e164} ext {extension}",
    ]
    return found


def cases(count: int = 2400, seed: int = 2026) -> list[Case]:
    """At least ``count`` inputs: valid numbers in every spelling, other countries', digits
    of other scripts, and junk, each with the oracle's answer."""
    rng = random.Random(seed)
    raws: list[tuple[str, str]] = []
    while len(raws) < count:
        country = rng.choice(list(COUNTRIES))
        region = COUNTRIES[country]
        own = valid_number(region, rng)
        for raw in spellings(own, region, rng):
            raws.append((country, raw))
        other_region = rng.choice([r for r in COUNTRIES.values() if r != region])
        other = valid_number(other_region, rng)
        raws.append((country, pn.format_number(other, PhoneNumberFormat.INTERNATIONAL)))
        raws.append(
            (country, f"{IDD[region]} {other.country_code} {pn.national_significant_number(other)}")
        )
        written = rng.choice(spellings(own, region, rng))
        raws.append((country, written.translate(ARABIC_INDIC)))
        raws.append((country, written.translate(FULL_WIDTH)))
        national = pn.format_number(own, PhoneNumberFormat.NATIONAL)
        for separator in SPACE_SEPARATORS:  # every Unicode space a form may put between digits
            raws.append((country, national.replace(" ", separator).replace("-", separator)))
        raws.append((country, rng.choice(JUNK)))
        abroad = valid_number(rng.choice(ABROAD), rng)
        raws.append((country, pn.format_number(abroad, PhoneNumberFormat.INTERNATIONAL)))
        raws.append((country, pn.format_number(abroad, PhoneNumberFormat.E164)))
        raws.append(
            (
                rng.choice([country, "Germany", ""]),
                f"+{abroad.country_code} (0) {pn.national_significant_number(abroad)}",
            )
        )
        raws.append((country, "".join(rng.choice(FUZZ_CHARS) for _ in range(rng.randint(0, 16)))))
    return [Case(c, raw, *oracle(raw, COUNTRIES.get(c))) for c, raw in raws]


SQL = Path(__file__).resolve().parent.parent / "services" / "patient" / "migrations" / "data"


def install(conn: psycopg.Connection) -> None:
    """Create the conversion (table and functions) and load the rules, as the migration does:
    the SQL file, then one plain statement over the JSON text."""
    conn.execute((SQL / "phone_conversion.sql").read_text())
    conn.execute(
        "INSERT INTO patient_phone_rules"
        " SELECT * FROM jsonb_populate_recordset(NULL::patient_phone_rules, %s::jsonb -> 'rules')"
        " ON CONFLICT DO NOTHING",
        [(SQL / "phone_rules.json").read_text()],
    )
