"""Pure math, no models: linear algebra, allocation, plans, units ↔ columns, and the cost model."""
