"""Move patient phone numbers to international format

phone becomes +1 (Canada, USA), +212 (Morocco) or +33 (France) followed by the digits,
with the national trunk prefix (a leading 0, or the 1 of an 11-digit North American
number) dropped. Numbers already written with a leading + keep their own country code;
NULL, '' and numbers of other countries are left untouched.

Lossless: phone_original keeps every number exactly as it was entered. Downgrade puts it
back wherever phone still holds its converted form; a phone written after the upgrade
(new row, or a changed number) is converted back to its national form instead, so no
later change is overwritten by a stale original. Neither direction touches updated_at:
reformatting is not an edit by anyone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from alembic_common.ddl import PRESERVE_UPDATED_AT

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dialling code and national trunk prefix per country.
CODES = {"Canada": ("1", "1"), "USA": ("1", "1"), "Morocco": ("212", "0"), "France": ("33", "0")}


def to_international(phone: str, country: str) -> str:
    """SQL for the international form of ``phone`` given the patient's ``country``."""
    digits = f"regexp_replace({phone}, '[^0-9]', '', 'g')"
    cases = [
        f"WHEN {phone} IS NULL OR btrim({phone}) = '' THEN {phone}",
        f"WHEN btrim({phone}) LIKE '+%' THEN '+' || {digits}",
    ]
    for name, (code, trunk) in CODES.items():
        # Drop a written country code or the trunk prefix before adding +code.
        prefix = (
            f"^(00{code}|{code}(?=[0-9]{{10}}$))"
            if trunk == code
            else f"^(00{code}|{code}|{trunk})"
        )
        cases.append(
            f"WHEN {country} = '{name}' THEN '+{code}' || regexp_replace({digits}, '{prefix}', '')"
        )
    return "CASE " + " ".join(cases) + f" ELSE {phone} END"


def to_national(phone: str, country: str) -> str:
    """SQL for the national form of an international ``phone``: the inverse of the above."""
    cases = [f"WHEN {phone} IS NULL OR {phone} NOT LIKE '+%' THEN {phone}"]
    for name, (code, trunk) in CODES.items():
        national = f"substr({phone}, {len(code) + 2})"
        if trunk != code:
            national = f"'{trunk}' || {national}"
        cases.append(f"WHEN {country} = '{name}' AND {phone} LIKE '+{code}%' THEN {national}")
    return "CASE " + " ".join(cases) + f" ELSE {phone} END"


def upgrade() -> None:
    op.add_column("patients", sa.Column("phone_original", sa.Text))
    op.execute(PRESERVE_UPDATED_AT)
    op.execute(
        "UPDATE patients SET phone_original = phone,"
        f" phone = {to_international('phone', 'country')}"
        " WHERE phone IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(PRESERVE_UPDATED_AT)
    op.execute(
        "UPDATE patients SET phone = CASE"
        f" WHEN phone IS NOT DISTINCT FROM {to_international('phone_original', 'country')}"
        " AND phone_original IS NOT NULL THEN phone_original"
        f" ELSE {to_national('phone', 'country')} END"
        " WHERE phone IS NOT NULL OR phone_original IS NOT NULL"
    )
    op.drop_column("patients", "phone_original")
