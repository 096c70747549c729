"""SQLAlchemy models of the appointment service: what autogenerate compares against."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Identity, Index, Text, func, text
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("scheduled", "confirmed", "checked_in", "completed", "cancelled", "no_show")
# Appointments in these states no longer hold the provider's time.
RELEASED = ("cancelled", "no_show")


class Base(DeclarativeBase):
    pass


class Appointment(Base):
    """A booked slot. patient_id and provider_id are rows in the patient and user services'
    own databases, so they are plain ids, not foreign keys."""

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="appointments_time_range_check"),
        CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="appointments_status_check"
        ),
        # A provider cannot be double-booked. int8range(...) WITH = needs no btree_gist.
        ExcludeConstraint(
            (text("int8range(provider_id, provider_id, '[]')"), "="),
            (text("tstzrange(starts_at, ends_at)"), "&&"),
            name="appointments_no_double_booking",
            using="gist",
            where=text("status NOT IN ('cancelled', 'no_show')"),
        ),
        Index("idx_appointments_entity_starts_at", "healthcare_entity_id", "starts_at"),
        Index("idx_appointments_entity_patient", "healthcare_entity_id", "patient_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    healthcare_entity_id: Mapped[int] = mapped_column(BigInteger)
    patient_id: Mapped[int] = mapped_column(BigInteger)
    provider_id: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text, server_default=text("'scheduled'"))
    reason: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


target_metadata = Base.metadata
