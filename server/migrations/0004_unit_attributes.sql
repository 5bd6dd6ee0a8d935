-- Text a unit's controller reports about itself (model, serial number, firmware), from the
-- gateway's birth. Merged, so a birth sent while the controller was off keeps what was known.
alter table units add column attributes jsonb not null default '{}';
