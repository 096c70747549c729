#!/usr/bin/env python3
"""Write libphonenumber's parsing and validity rules as data, and the SQL that applies them.

    pip install phonenumbers && python scripts/phone_rules.py

writes, deterministically for a given ``phonenumbers`` version:

- ``services/patient/migrations/data/phone_rules.json``: per country calling code, the
  rules of libphonenumber's metadata, already in PostgreSQL regex syntax (ARE);
- ``services/patient/migrations/data/phone_conversion.sql``: the table those rules are
  loaded into and the conversion functions ``patient_phone_parse`` and
  ``patient_phone_national``. The SQL is generated from ``SQL_TEMPLATE`` below: for speed,
  the rules of the four home regions (CA, US, FR, MA) are inlined in it as constants, and
  the table is only consulted for numbers of other calling codes.

The patient service's phone conversion lives in the database (one SQL definition for the
backfill, the sync trigger and the reverse conversion). A migration loads the JSON into the
table, so the rules a database uses are the ones of the release that migrated it, and
``phonenumbers`` is only a development and test dependency.

JSON fields of a calling code (``rules`` is the list the table is loaded from):

- ``national_prefix``: the main region's national prefix for parsing (a regex matched at
  the start), ``national_groups`` its number of capture groups, ``national_transform`` the
  rewrite of what it matched (``\\1`` syntax) or null;
- ``general``: the main region's general pattern, anchored (``^(?:...)$``); ``lengths``
  and ``local_lengths`` its possible lengths;
- ``valid``: anchored pattern of a valid national significant number. It is exact in
  libphonenumber's sense: a number belongs to the first region of the code (in
  libphonenumber's order) that claims it (by leading digits, or by being valid there) and
  must be valid for that region, and a number type matches only at its own possible
  lengths; ``valid_lengths`` the union of the regions' possible lengths.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "services" / "patient" / "migrations" / "data"
HOME = {"Canada": "CA", "USA": "US", "France": "FR", "Morocco": "MA"}

TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)

# Digits libphonenumber reads besides ASCII ones, and the full-width plus.
OTHER_DIGITS = "".join(chr(z + i) for z in (0x0660, 0x06F0, 0xFF10) for i in range(10)) + "\uff0b"
ASCII_DIGITS = "0123456789" * 3 + "+"


def pg(pattern: str) -> str:
    r"""A libphonenumber (Java/Python) regex in PostgreSQL ARE syntax: \d is ASCII only."""
    return pattern.replace("\\d", "[0-9]")


def widths(pattern: str) -> tuple[int, int]:
    """The shortest and longest match of a regex."""
    from re import _parser  # type: ignore[attr-defined]

    low, high = _parser.parse(pattern).getwidth()
    return low, high


def type_pattern(desc: object, general_lengths: set[int]) -> str | None:
    """One number type's pattern, restricted to its possible lengths when the pattern alone
    could match other lengths (libphonenumber checks the lengths before the pattern)."""
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None
    lengths = set(desc.possible_length) or general_lengths  # type: ignore[attr-defined]
    if -1 in lengths:
        return None
    lengths &= general_lengths or lengths
    low, high = widths(pattern)
    if high <= 17 and set(range(low, high + 1)) <= lengths:
        return f"(?:{pattern})"
    only = "|".join(f"[0-9]{{{n}}}$" for n in sorted(lengths))
    return f"(?=(?:{only}))(?:{pattern})"


def region_valid(metadata: object) -> str | None:
    general = metadata.general_desc  # type: ignore[attr-defined]
    general_lengths = {n for n in general.possible_length if n > 0}
    parts = sorted(
        {
            p
            for t in TYPES
            if getattr(metadata, t) is not None
            and (p := type_pattern(getattr(metadata, t), general_lengths))
        }
    )
    return "|".join(parts) or None


def valid_pattern(metadata: list[object], only: set[str] | None = None) -> str | None:
    """The exact validity pattern of a calling code shared by ``metadata``'s regions (or
    of its numbers that belong to the regions ``only``)."""
    terms = []
    earlier: list[str] = []  # leading digits of the regions before this one
    for m in metadata:
        valid = region_valid(m)
        leading = m.leading_digits  # type: ignore[attr-defined]
        if valid and (only is None or m.id in only):  # type: ignore[attr-defined]
            term = f"(?:{valid})"
            if leading:
                term = f"(?={leading}){term}"
            if earlier:
                term = f"(?!{'|'.join(earlier)}){term}"
            terms.append(term)
        if leading:
            earlier.append(f"(?:{leading})")
    return f"^(?:{'|'.join(terms)})$" if terms else None


def metadata_of(code: int, region: str) -> object | None:
    from phonenumbers.phonemetadata import PhoneMetadata

    if region == "001":
        return PhoneMetadata.metadata_for_nongeo_region(code)
    return PhoneMetadata.metadata_for_region(region)


def rules() -> list[dict[str, object]]:
    import phonenumbers

    found = []
    for code, regions in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()):
        metadata = [m for r in regions if (m := metadata_of(code, r)) is not None]
        main = metadata[0] if metadata else None
        general = main.general_desc if main else None
        prefix = main.national_prefix_for_parsing if main else None
        found.append(
            {
                "country_code": code,
                "regions": list(regions),
                # How the main region's numbers are parsed: its national prefix (a regex) and
                # the rewrite of what it captured, its general pattern and possible lengths.
                "national_prefix": pg(prefix) if prefix else None,
                "national_groups": re.compile(prefix).groups if prefix else 0,
                "national_transform": main.national_prefix_transform_rule if main else None,
                "general": f"^(?:{pg(general.national_number_pattern)})$"
                if general and general.national_number_pattern
                else None,
                "lengths": [n for n in general.possible_length if n > 0] if general else [],
                "local_lengths": list(general.possible_length_local_only) if general else [],
                # What a valid number of the code looks like (see the module docstring).
                "valid": pg(p) if (p := valid_pattern(metadata)) else None,
                "valid_lengths": sorted(
                    {n for m in metadata for n in m.general_desc.possible_length if n > 0}
                ),
            }
        )
    return found


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def nanp_areas() -> str:
    """A flag per area code N (0-999): whether every N[2-9]XXXXXX is valid for +1 (a cheap first test).

    Taken from the US and Canadian number types written ``(?:AREAS)[2-9]\\d{6}``; Canadian
    areas another region claims first by its leading digits are left out. Checked against
    libphonenumber itself.
    """
    import phonenumbers as pn

    areas: set[str] = set()
    earlier: list[str] = []
    for region in pn.COUNTRY_CODE_TO_REGION_CODE[1]:
        m = metadata_of(1, region)
        if region in ("US", "CA"):
            for t in TYPES:
                desc = getattr(m, t)
                pattern = getattr(desc, "national_number_pattern", None) or ""
                for alternative in _top_level(pattern):
                    head = alternative.removesuffix("[2-9]\\d{6}")
                    if head == alternative or widths(head) != (3, 3):
                        continue
                    for n in range(200, 1000):
                        area = str(n)
                        blocked = any(re.match(e, area) for e in earlier)
                        if re.fullmatch(head, area) and not blocked:
                            areas.add(area)
        if m.leading_digits:  # type: ignore[attr-defined]
            earlier.append(m.leading_digits)  # type: ignore[attr-defined]
    for area in sorted(areas):
        for rest in ("2000000", "5550199", "9999999"):
            assert pn.is_valid_number(pn.parse(f"+1{area}{rest}")), area
    # a boolean array indexed by the area code (an O(1) lookup)
    return "[0:999]={" + ",".join("t" if f"{n:03d}" in areas else "f" for n in range(1000)) + "}"


def _top_level(pattern: str) -> list[str]:
    """A regex's top-level alternatives."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(pattern):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _chars(text: str) -> str:
    """Characters for a PostgreSQL bracket expression, non-ASCII ones as \\uXXXX escapes."""
    out = []
    for c in text:
        if ord(c) > 127:
            out.append(f"\\u{ord(c):04x}")
        elif c in "[]\\":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _escape_non_ascii(pattern: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) > 127 else c for c in pattern)


def libphonenumber_patterns() -> dict[str, str]:
    """Viability and extension patterns of libphonenumber, in ARE syntax."""
    from phonenumbers import phonenumberutil as u

    punctuation = "-" + _chars(u._VALID_PUNCTUATION.replace("\\[", "[").replace("\\]", "]")[1:])
    # _VALID_PUNCTUATION holds ranges (a-b) written with raw characters: keep them ranges.
    punctuation += "X"  # libphonenumber matches it case-insensitively
    punct = f"[{punctuation}*]"
    viable = f"^(?:[0-9]{{2}}|\\+*(?:{punct}*[0-9]){{3,}}[{punctuation}*A-Za-z0-9]*)$"
    extn = u._EXTN_PATTERN.pattern
    assert extn.startswith("(?:") and extn.endswith(")$")
    alternatives = _top_level(extn[3:-2])
    assert len(alternatives) == 6, alternatives

    def noncapturing(p: str) -> str:
        return _escape_non_ascii(p.replace("(\\d{", "(?:[0-9]{").replace("\\d", "[0-9]"))

    parse = "(?i)(?:" + "|".join(noncapturing(a) for a in alternatives) + ")$"
    end = "\\u00a0\\u00ad\\u200b\\u2060\\u3000" + _chars(
        "".join(c for c in u._VALID_PUNCTUATION if ord(c) > 127 and not c.isalnum())
    )
    unwanted_end = f"(?:[^#0-9A-Za-z\\u0080-\\uffff]|[{end}])+$"
    return {
        "VIABLE": viable,
        "EXT_PARSE": parse,
        "UNWANTED_END": unwanted_end,
    }


def home_rules() -> dict[str, dict[str, object]]:
    import phonenumbers as pn

    found = {}
    for region in ("CA", "US", "FR", "MA"):
        m = metadata_of(pn.country_code_for_region(region), region)
        prefix = m.national_prefix_for_parsing  # type: ignore[attr-defined]
        assert prefix and prefix.isdigit(), (region, prefix)  # inlined as a literal prefix
        assert not m.national_prefix_transform_rule  # type: ignore[attr-defined]
        idd = m.international_prefix  # type: ignore[attr-defined]
        assert idd.isdigit(), (region, idd)
        general = m.general_desc  # type: ignore[attr-defined]
        found[region] = {
            "cc": str(m.country_code),  # type: ignore[attr-defined]
            "idd": idd,
            "prefix": prefix,
            "general": f"^(?:{pg(general.national_number_pattern)})$",
            "lengths": [n for n in general.possible_length if n > 0],
            "local": list(general.possible_length_local_only),
        }
    return found


def _len_ok(var: str, rule: dict[str, object]) -> str:
    """libphonenumber accepts a stripped national number unless its length test says
    TOO_SHORT, IS_POSSIBLE_LOCAL_ONLY or INVALID_LENGTH."""
    lengths = rule["lengths"]
    local = rule["local"]
    assert isinstance(lengths, list) and isinstance(local, list) and lengths
    ok = f"(length({var}) IN ({', '.join(map(str, lengths))}) OR length({var}) > {max(lengths)})"
    if local:
        ok = f"length({var}) NOT IN ({', '.join(map(str, local))}) AND {ok}"
    return ok


def _too_long(var: str, rule: dict[str, object]) -> str:
    lengths = rule["lengths"]
    local = rule["local"]
    assert isinstance(lengths, list) and isinstance(local, list)
    cond = f"length({var}) > {max(lengths)}"
    if local:
        cond = f"length({var}) NOT IN ({', '.join(map(str, local))}) AND {cond}"
    return cond


def _strip(rule: dict[str, object], x: str) -> str:
    """Expression: national number ``x`` without the national prefix of ``rule``'s region,
    stripped only as libphonenumber does (the rest still reads as a number, possible length)."""
    prefix = str(rule["prefix"])
    general = sql_string(str(rule["general"]))
    n = len(prefix)
    rest = f"substr({x}, {n + 1})"
    return (
        f"CASE WHEN left({x}, {n}) = '{prefix}'"
        f" AND NOT ({x} ~ {general} AND {rest} !~ {general})"
        f" AND {_len_ok(rest, rule)} THEN {rest} ELSE {x} END"
    )


def _e164(cc: str, x: str, valid: dict[str, object], areas: str) -> str:
    """Expression: '+CC' || x when ``x`` is a valid national significant number of +cc."""
    if cc == "1":
        # most numbers: a US or Canadian area code all of whose numbers are valid
        is_valid = (
            f"(length({x}) = 10 AND substr({x}, 4, 1) NOT IN ('0', '1')"
            f" AND ({sql_string(areas)}::boolean[])[left({x}, 3)::integer])"
            f" OR (length({x}) IN (7, 10) AND ({x} ~ {sql_string(str(valid['1_home']))}"
            f" OR {x} ~ {sql_string(str(valid['1']))}))"
        )
    else:
        lengths = ", ".join(map(str, valid[f"{cc}_lengths"]))  # type: ignore[call-overload]
        is_valid = f"length({x}) IN ({lengths}) AND {x} ~ {sql_string(str(valid[cc]))}"
    return f"CASE WHEN {is_valid} THEN '+{cc}' || {x} END"


def _finish(rule: dict[str, object], valid: dict[str, object], areas: str) -> str:
    """Statements ending a number ``nn`` read with a home region's metadata: ``e`` := the
    E.164 number when valid."""
    return f"""
            nn := {_strip(rule, "nn")};
            e := {_e164(str(rule["cc"]), "nn", valid, areas)};"""


def _own(rule: dict[str, object]) -> str:
    """Condition: digits ``d`` (no plus) start neither with the region's IDD nor with its
    calling code, so they are a national number of the region."""
    idd = str(rule["idd"])
    cc = str(rule["cc"])
    return (
        f"NOT (left(d, {len(idd)}) = '{idd}' AND substr(d, {len(idd) + 1}, 1) <> '0')"
        f" AND left(d, {len(cc)}) <> '{cc}'"
    )


def _hot(home: dict[str, dict[str, object]], valid: dict[str, object], areas: str) -> str:
    """The hot path: digits and punctuation only, a home calling code with a plus or a
    national number of the patient's home region. Three statements."""
    keys = {"CA": "C", "US": "U", "FR": "F", "MA": "M"}
    main = {"1": "U", "33": "F", "212": "M"}
    pick = ["WHEN strpos(substr(d, 2), '+') > 0 THEN NULL"]
    pick += [
        f"WHEN left(d, {len(c) + 1}) = '+{c}' THEN '{k}' || substr(d, {len(c) + 2})"
        for c, k in main.items()
    ]
    pick += ["WHEN left(d, 1) = '+' THEN NULL"]
    pick += [
        f"WHEN country = {sql_string(c)} THEN CASE WHEN {_own(home[r])} THEN '{keys[r]}' || d END"
        for c, r in HOME.items()
    ]
    strip = [
        f"WHEN '{keys[r]}' THEN '{keys[r]}' || ({_strip(home[r], 'substr(nn, 2)')})" for r in home
    ]
    e164 = [
        f"WHEN '{keys[r]}' THEN {_e164(str(home[r]['cc']), 'substr(nn, 2)', valid, areas)}"
        for r in home
    ]
    sep = "\n                "
    return f"""
        nn := CASE
                {sep.join(pick)}
            END;
        IF nn IS NOT NULL THEN
            nn := CASE left(nn, 1)
                {sep.join(strip)}
            END;
            RETURN CASE left(nn, 1)
                {sep.join(e164)}
            END;
        END IF;""".replace("\\n", "\n")


def _national(country: str, region: str, rule: dict[str, object]) -> str:
    """Statements reading digits ``d`` without a plus in ``region``: IDD, then the region's
    own calling code written without a plus, else a national number."""
    cc = str(rule["cc"])
    idd = str(rule["idd"])
    prefix = str(rule["prefix"])
    general = sql_string(str(rule["general"]))
    n = len(prefix)
    return f"""
    WHEN {sql_string(country)} THEN
      IF left(d, {len(idd)}) = '{idd}' AND substr(d, {len(idd) + 1}, 1) <> '0' THEN
        d := substr(d, {len(idd) + 1});
        IF length(d) <= 2 THEN
          RETURN NULL;
        END IF;
        cc := CASE WHEN left(d, 1) = '1' THEN 1 WHEN left(d, 2) = '33' THEN 33
          WHEN left(d, 3) = '212' THEN 212 ELSE patient_phone__code(d) END;
        IF cc IS NULL THEN
          RETURN NULL;
        END IF;
        nn := substr(d, length(cc::text) + 1);
      ELSIF left(d, {len(cc)}) = '{cc}' THEN
        -- the calling code without a plus: kept as one when the rest reads better
        p := substr(d, {len(cc) + 1});
        IF left(p, {n}) = '{prefix}' AND NOT (p ~ {general} AND substr(p, {n + 1}) !~ {general}) THEN
          p := substr(p, {n + 1});
        END IF;
        IF (d !~ {general} AND p ~ {general}) OR ({_too_long("d", rule)}) THEN
          cc := {cc};
          nn := p;
        END IF;
      END IF;
      IF cc IS NULL THEN
        IF retry THEN
          RETURN NULL;
        END IF;
        nn := d;
        own := true;
      END IF;"""


# Both directions read a country spelled another way as the country it names, through the
# one table of spellings (data/countries.json) that patient version 6 makes canonical with.
COUNTRY = """    -- a country spelled another way (data/countries.json, as version 6 reads it)
    IF country NOT IN ('Canada', 'USA', 'France', 'Morocco') THEN
        country := coalesce(patient_country_canonical(country), country);
    END IF;
"""


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def canonical_sql() -> str:
    """patient_country_canonical(country): the canonical name for any spelling in
    data/countries.json (folded as that file says), NULL for a country it does not know."""
    table = json.loads((DATA / "countries.json").read_text())
    fold = (
        "lower(btrim(regexp_replace(regexp_replace("
        f"translate(country, {_quoted(table['fold']['from'])}, {_quoted(table['fold']['to'])}),"
        r" '[.\u200b\u200e\u200f\ufeff\u0640]', '', 'g'),"
        r" '[[:space:]\u00a0_-]+', ' ', 'g')))"
    )
    cases = "\n        ".join(
        f"WHEN k IN ({', '.join(_quoted(s) for s in spellings)}) THEN {_quoted(name)}"
        for name, spellings in table["spellings"].items()
    )
    return (
        "-- patient_country_canonical(country) -> 'Canada', 'USA', 'France' or 'Morocco' for any\n"
        "--   spelling data/countries.json lists, NULL for a country it does not know.\n"
        "CREATE OR REPLACE FUNCTION patient_country_canonical(country text) RETURNS text\n"
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$\n"
        f"    SELECT CASE\n        {cases}\n    END\n"
        f"    FROM (SELECT {fold} AS k) AS folded\n$fn$;\n"
    )


SQL_TEMPLATE = r"""-- Phone numbers of patients: libphonenumber's reading, inside PostgreSQL.
--
-- GENERATED by scripts/phone_rules.py from libphonenumber {version}: do not edit, change the
-- script and run it again. The rules of the four home regions (CA, US, FR, MA) are inlined
-- below as constants for speed; the rules of every calling code are loaded into
-- patient_phone_rules from phone_rules.json (generated alongside) and consulted only for
-- numbers of other calling codes. Idempotent; PostgreSQL >= 15.
--
-- patient_phone_parse(raw, country) -> '+15145550199' or '+15145550199;ext=123', or NULL
--   when raw holds no valid number; mirrors phonenumbers.parse(raw, region) +
--   is_valid_number, plus 'poste' as an extension label.
-- patient_phone_national(e164, extension, country) -> the national form when the number is
--   of the patient's country ('(514) 555-0199', '06 12 34 56 78', '0612-345678', with
--   ' ext. 123'), else E.164; patient_phone_parse reads it back to the same number.

{CANONICAL}
CREATE TABLE IF NOT EXISTS patient_phone_rules (
    country_code integer PRIMARY KEY,
    regions text[] NOT NULL,
    national_prefix text,
    national_groups integer NOT NULL DEFAULT 0,
    national_transform text,
    general text,
    lengths integer[] NOT NULL DEFAULT '{{}}',
    local_lengths integer[] NOT NULL DEFAULT '{{}}',
    valid text,
    valid_lengths integer[] NOT NULL DEFAULT '{{}}'
);

-- The calling code at the start of international digits (no leading 0), or NULL.
CREATE OR REPLACE FUNCTION patient_phone__code(d text) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT max(country_code) FROM patient_phone_rules
    WHERE d ~ '^[1-9][0-9]{{2}}'
      AND country_code IN (left(d, 1)::integer, left(d, 2)::integer, left(d, 3)::integer)
$fn$;

-- A national number nn of calling code cc (any code, rules from the table), its national
-- prefix still in it: the E.164 number when valid, else NULL.
CREATE OR REPLACE FUNCTION patient_phone__finish(cc integer, nn text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$
DECLARE
    r patient_phone_rules;
    m text[];
    p text;
    viable boolean;
BEGIN
    SELECT * INTO r FROM patient_phone_rules WHERE country_code = cc;
    IF NOT FOUND OR r.valid IS NULL OR length(nn) < 2 THEN
        RETURN NULL;
    END IF;
    IF r.national_prefix IS NOT NULL THEN
        m := regexp_match(nn, '^(' || r.national_prefix || ')');
        IF m IS NOT NULL THEN
            viable := coalesce(nn ~ r.general, false);
            IF r.national_transform IS NULL OR m[r.national_groups + 1] IS NULL THEN
                p := substr(nn, length(m[1]) + 1);
            ELSE
                p := regexp_replace(nn, '^(?:' || r.national_prefix || ')', r.national_transform);
            END IF;
            IF NOT (viable AND NOT coalesce(p ~ r.general, false))
               AND cardinality(r.lengths) > 0
               AND NOT length(p) = ANY (r.local_lengths)
               AND (length(p) = ANY (r.lengths) OR length(p) > (SELECT max(x) FROM unnest(r.lengths) x)) THEN
                nn := p;
            END IF;
        END IF;
    END IF;
    IF length(nn) = ANY (r.valid_lengths) AND nn ~ r.valid THEN
        RETURN '+' || cc || nn;
    END IF;
    RETURN NULL;
END
$fn$;

-- The slow path, for text with letters, '#', ';', ',' or unusual characters: libphonenumber's
-- extraction of the number (from the first digit or plus, trailing junk and a second number
-- cut off), its viability test, and the extension. Returns {{digits with a leading '+' when
-- written with one, extension}} or NULL when it is not a phone number.
CREATE OR REPLACE FUNCTION patient_phone__split(s text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    i integer;
    m text[];
    tail text;
    suffix text;
    head text;
    ext text;
    num text;
    plus boolean;
BEGIN
    IF strpos(lower(s), 'poste') > 0 THEN
        s := regexp_replace(s, '\s*poste\s*', ' ext. ', 'gi');
    END IF;
    i := regexp_instr(s, '[+0-9]');
    IF i = 0 THEN
        RETURN NULL;
    END IF;
    s := regexp_replace(substr(s, i), {UNWANTED_END}, '');
    i := regexp_instr(s, '[\\/] *x');
    IF i > 0 THEN
        s := left(s, i - 1);
    END IF;
    i := strpos(s, ';isub=');
    IF i > 1 THEN
        s := left(s, i - 1);
    END IF;
    num := s;
    m := regexp_match(s, '([^0-9]*)([0-9]+)(#?)$');
    IF m IS NOT NULL AND m[1] <> '' THEN
        tail := m[1] || m[2] || m[3];
        suffix := substring(tail from {EXT_PARSE});
        IF suffix IS NOT NULL THEN
            head := left(s, length(s) - length(suffix));
            IF head ~ {VIABLE} THEN
                num := head;
                ext := m[2];
            END IF;
        END IF;
        -- viable: the whole, or the number before an extension
        IF ext IS NULL AND s !~ {VIABLE} AND (suffix IS NULL OR head !~ {VIABLE}) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT s ~ {VIABLE} THEN
        RETURN NULL;
    END IF;
    plus := left(num, 1) = '+';
    num := ltrim(num, '+');
    IF num ~ '[A-Za-z].*[A-Za-z].*[A-Za-z]' THEN
        -- a vanity number (1-800-FLOWERS): letters are keypad digits
        num := translate(upper(num), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '22233344455566677778889999');
    END IF;
    num := regexp_replace(num, '[^0-9]', '', 'g');
    RETURN ARRAY[CASE WHEN plus THEN '+' ELSE '' END || num, ext];
END
$fn$;

CREATE OR REPLACE FUNCTION patient_phone_parse(raw text, country text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$
DECLARE
    s text := normalize(raw, NFKC);  -- read as the same text: typographic spaces, compatibility digits
    d text;
    x text[];
    ext text;
    plus boolean := false;
    retry boolean := false;
    own boolean := false;
    cc integer;
    nn text;
    p text;
    e text;
BEGIN
{COUNTRY}    -- hot path: ASCII digits and punctuation only, a home number
    IF octet_length(s) = length(s) AND ltrim(s, '0123456789 .()+-') = '' THEN
        d := translate(s, ' .()-', '');{HOT}
    END IF;
    -- general path
    IF s IS NULL THEN
        RETURN NULL;
    END IF;
    IF octet_length(s) <> length(s) THEN
        s := translate(s, '{OTHER_DIGITS}', '{ASCII_DIGITS}');
    END IF;
    -- fast path: digits, spaces, dots, dashes, parentheses and plus only
    IF ltrim(s, '0123456789 .()+-') = '' THEN
        d := translate(s, ' .()-', '');
        -- a plus only at the start (after leading punctuation), as libphonenumber's viability
        IF strpos(d, '+') > 0 AND strpos(ltrim(ltrim(s, ' .()-'), '+'), '+') > 0 THEN
            RETURN NULL;
        END IF;
    ELSE
        x := patient_phone__split(s);
        IF x IS NULL THEN
            RETURN NULL;
        END IF;
        d := x[1];
        ext := x[2];
    END IF;
    IF left(d, 1) = '+' THEN
        d := ltrim(d, '+');
        IF strpos(d, '+') > 0 OR length(d) <= 2 THEN
            RETURN NULL;
        END IF;
        cc := CASE WHEN left(d, 1) = '1' THEN 1 WHEN left(d, 2) = '33' THEN 33
            WHEN left(d, 3) = '212' THEN 212 ELSE patient_phone__code(d) END;
        IF cc IS NULL THEN
            -- libphonenumber then drops the plus and requires a calling code without it
            retry := true;
        ELSE
            nn := substr(d, length(cc::text) + 1);
        END IF;
    ELSIF strpos(d, '+') > 0 THEN
        RETURN NULL;
    END IF;
    IF cc IS NULL THEN
        CASE country{NATIONAL}
        ELSE
            RETURN NULL;
        END CASE;
    END IF;
    IF own THEN
        CASE country
        WHEN 'Canada' THEN{FINISH_CA}
        WHEN 'USA' THEN{FINISH_US}
        WHEN 'France' THEN{FINISH_FR}
        ELSE{FINISH_MA}
        END CASE;
    ELSIF cc = 1 THEN{FINISH_US}
    ELSIF cc = 33 THEN{FINISH_FR}
    ELSIF cc = 212 THEN{FINISH_MA}
    ELSE
        e := patient_phone__finish(cc, nn);
    END IF;
    IF e IS NULL OR ext IS NULL THEN
        RETURN e;
    END IF;
    RETURN e || ';ext=' || ext;
END
$fn$;

CREATE OR REPLACE FUNCTION patient_phone_national(e164 text, extension text, country text)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$
DECLARE
    n text;
    x text := CASE WHEN coalesce(extension, '') = '' THEN '' ELSE ' ext. ' || extension END;
    national text;
BEGIN
    IF e164 IS NULL THEN
        RETURN NULL;
    END IF;
{COUNTRY}    IF country IN ('Canada', 'USA') AND e164 ~ '^\+1[0-9]{{10}}$' THEN
        n := substr(e164, 3);
        national := '(' || left(n, 3) || ') ' || substr(n, 4, 3) || '-' || substr(n, 7);
    ELSIF country = 'France' AND e164 ~ '^\+33[0-9]{{9}}$' THEN
        n := substr(e164, 4);
        national := '0' || left(n, 1) || ' ' || substr(n, 2, 2) || ' ' || substr(n, 4, 2)
            || ' ' || substr(n, 6, 2) || ' ' || substr(n, 8, 2);
    ELSIF country = 'Morocco' AND e164 ~ '^\+212[0-9]{{9}}$' THEN
        n := substr(e164, 5);
        national := '0' || left(n, 3) || '-' || substr(n, 4);
    ELSIF country IN ('Canada', 'USA') AND left(e164, 2) = '+1' THEN
        national := substr(e164, 3);
    ELSIF country = 'France' AND left(e164, 3) = '+33' THEN
        national := '0' || substr(e164, 4);
    ELSIF country = 'Morocco' AND left(e164, 4) = '+212' THEN
        national := '0' || substr(e164, 5);
    END IF;
    -- the national form only when it reads back to the same number, else E.164
    IF x <> '' THEN
        e164 := e164 || ';ext=' || extension;
    END IF;
    IF national IS NOT NULL AND patient_phone_parse(national || x, country) IS NOT DISTINCT FROM e164 THEN
        RETURN national || x;
    END IF;
    RETURN replace(e164, ';ext=', ' ext. ');
END
$fn$;
"""


def conversion_sql(version: str, found: list[dict[str, object]]) -> str:
    by_code = {r["country_code"]: r for r in found}
    valid: dict[str, object] = {}
    for code in (1, 33, 212):
        valid[str(code)] = by_code[code]["valid"]
        valid[f"{code}_lengths"] = by_code[code]["valid_lengths"]
    import phonenumbers

    nanp = [metadata_of(1, r) for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]]
    valid["1_home"] = pg(valid_pattern(nanp, {"US", "CA"}) or "")  # checked first: smaller
    home = home_rules()
    areas = nanp_areas()
    fill = {
        "version": version,
        "OTHER_DIGITS": OTHER_DIGITS,
        "COUNTRY": COUNTRY,
        "CANONICAL": canonical_sql(),
        "ASCII_DIGITS": ASCII_DIGITS,
        "HOT": _hot(home, valid, areas),
        "NATIONAL": "".join(_national(c, r, home[r]) for c, r in HOME.items()),
        **{f"FINISH_{r}": _finish(home[r], valid, areas) for r in home},
        **{k: sql_string(v) for k, v in libphonenumber_patterns().items()},
    }
    return SQL_TEMPLATE.format(**fill)


def main() -> None:
    import phonenumbers

    found = rules()
    data = {"libphonenumber": phonenumbers.__version__, "rules": found}
    (DATA / "phone_rules.json").write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    (DATA / "phone_conversion.sql").write_text(conversion_sql(phonenumbers.__version__, found))
    sys.stdout.write(f"wrote {DATA / 'phone_rules.json'} and {DATA / 'phone_conversion.sql'}\n")


if __name__ == "__main__":
    main()
