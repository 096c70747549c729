"""SQLAlchemy models of the user service: the schema that autogenerate compares against."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

COUNTRIES = ("Canada", "USA", "Morocco", "France")
ENTITY_TYPES = ("clinic", "hospital")
ROLES = ("admin", "doctor", "nurse", "receptionist", "staff")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class HealthcareEntity(Timestamps, Base):
    """A clinic or hospital: the tenant every user and patient belongs to."""

    __tablename__ = "healthcare_entities"
    __table_args__ = (
        CheckConstraint(_in("type", ENTITY_TYPES), name="healthcare_entities_type_check"),
        CheckConstraint(_in("country", COUNTRIES), name="healthcare_entities_country_check"),
        Index("idx_healthcare_entities_country", "country"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(Text)
    province_state: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)


class User(Timestamps, Base):
    """A staff member of one healthcare entity (multi-tenant: email is unique per entity)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("healthcare_entity_id", "email", name="users_entity_email_key"),
        CheckConstraint(_in("role", ROLES), name="users_role_check"),
        Index("idx_users_entity_role", "healthcare_entity_id", "role"),
        # email is unique within an entity as the same identifier: NFKC, case folding,
        # white space (v4; docs/tenancy.md, "Clinical identity").
        Index(
            "users_entity_email_identity_key",
            "healthcare_entity_id",
            func.identity_key(text("email")),
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    healthcare_entity_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("healthcare_entities.id", ondelete="RESTRICT")
    )
    email: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


target_metadata = Base.metadata
