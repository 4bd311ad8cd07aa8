"""Small helpers shared across secateurs (atomic files, seeding)."""
