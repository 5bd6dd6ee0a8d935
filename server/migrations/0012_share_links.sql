-- Read-only share links: a unit's operating record shown to a prospect (sales), with the site's
-- identity hidden. The secret is stored as its SHA-256; a link expires and can be revoked.
create table share_links (
    id bigint generated always as identity primary key,
    token_hash bytea not null unique,
    unit_id bigint not null references units (id),
    -- What the prospect reads instead of the site and unit names.
    label text not null,
    created_by text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);
create index share_links_by_unit on share_links (unit_id);
alter table share_links enable row level security;
create policy tenant on share_links to chillcloud_api
    using (exists (select 1 from units u where u.id = share_links.unit_id));
grant select, insert, update, delete on share_links to chillcloud_api;
grant usage, select on sequence share_links_id_seq to chillcloud_api;
