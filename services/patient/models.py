"""SQLAlchemy models of the patient service at head: what autogenerate compares against."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BLOOD_TYPES = ("A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-", "Rh-null")
LANGUAGES = ("en", "fr", "ar", "es")
MARITAL_STATUSES = ("single", "married", "divorced", "widowed", "separated", "other")
GENDERS = ("male", "female", "other", "unknown")
COUNTRIES = ("Canada", "USA", "France", "Morocco")


def _optional_in(column: str, values: tuple[str, ...]) -> str:
    listed = ", ".join(repr(v) for v in values)
    return f"{column} IS NULL OR {column} = '' OR {column} IN ({listed})"


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """A patient of one healthcare entity; ``patient_id`` is the entity's own patient code."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint(
            "healthcare_entity_id", "patient_id", name="patients_entity_patient_id_key"
        ),
        CheckConstraint(_optional_in("gender", GENDERS), name="patients_gender_check"),
        CheckConstraint(_optional_in("blood_type", BLOOD_TYPES), name="patients_blood_type_check"),
        CheckConstraint(
            _optional_in("preferred_language", LANGUAGES), name="patients_preferred_language_check"
        ),
        CheckConstraint(
            _optional_in("marital_status", MARITAL_STATUSES), name="patients_marital_status_check"
        ),
        CheckConstraint(
            "country IN (" + ", ".join(repr(c) for c in COUNTRIES) + ")",
            name="patients_country_check",
        ),
        CheckConstraint("date_of_birth <= current_date", name="patients_date_of_birth_check"),
        Index("idx_patients_entity_name", "healthcare_entity_id", "last_name", "first_name"),
        # patient_id is unique within an entity as the same identifier: NFKC, case folding,
        # white space (v10; docs/tenancy.md, "Clinical identity").
        Index(
            "patients_entity_patient_id_identity_key",
            "healthcare_entity_id",
            func.identity_key(text("patient_id")),
            unique=True,
        ),
        Index("idx_patients_entity_email", "healthcare_entity_id", "email"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    healthcare_entity_id: Mapped[int] = mapped_column(BigInteger)
    patient_id: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    date_of_birth: Mapped[date] = mapped_column(Date)
    gender: Mapped[str | None] = mapped_column(Text)
    # E.164 (+15145550199) since version 5; NULL when no valid number was entered.
    phone: Mapped[str | None] = mapped_column(Text)
    # The number exactly as entered before version 5, kept so that it can be undone.
    phone_original: Mapped[str | None] = mapped_column(Text)
    phone_extension: Mapped[str | None] = mapped_column(Text)  # its digits, or NULL
    email: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    province_state: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(Text)
    # One of COUNTRIES since version 6 (a trigger normalises other spellings on write).
    country: Mapped[str] = mapped_column(Text)
    # The spelling as entered when version 6 (or its trigger) normalised it, for downgrade.
    country_original: Mapped[str | None] = mapped_column(Text)
    emergency_contact_name: Mapped[str | None] = mapped_column(Text)
    emergency_contact_phone: Mapped[str | None] = mapped_column(Text)
    emergency_contact_relationship: Mapped[str | None] = mapped_column(Text)
    emergency_contact_address: Mapped[str | None] = mapped_column(Text)
    blood_type: Mapped[str | None] = mapped_column(Text)
    preferred_language: Mapped[str | None] = mapped_column(Text)
    marital_status: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


target_metadata = Base.metadata


class PhoneRule(Base):
    """libphonenumber's rules per calling code, loaded by version 4 (the phone conversion)."""

    __tablename__ = "patient_phone_rules"

    country_code: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    regions: Mapped[list[str]] = mapped_column(ARRAY(Text))
    national_prefix: Mapped[str | None] = mapped_column(Text)
    national_groups: Mapped[int] = mapped_column(Integer, server_default="0")
    national_transform: Mapped[str | None] = mapped_column(Text)
    general: Mapped[str | None] = mapped_column(Text)
    lengths: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    local_lengths: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    valid: Mapped[str | None] = mapped_column(Text)
    valid_lengths: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
