-- A site's corrected register map extends a built-in profile: the family (the built-in one it
-- derives from) chooses the domain pack of rules. And the name a gateway's configuration gives a
-- unit, shown when the dashboard has not renamed it (`display_name`).
alter table units add column family text not null default '';
alter table units add column gateway_display_name text not null default '';
