-- History stays with the owner it happened under. A site moved to another customer takes its
-- units, points and readings along (the machine's own record), but not what the previous owner's
-- people did: their commands, alarms and tickets (with the names of who acknowledged and
-- handled them) and their share links. Each such row records the site's owner when it was
-- made; a customer sees the rows of its own time only. Open alarms and tickets move with the
-- site (the new owner must see what is wrong now), and a site's first owner adopts what
-- happened before it had one (commissioning).

do $$
declare
    name text;
begin
    foreach name in array array['alarms', 'tickets', 'commands', 'share_links']
    loop
        execute format('alter table %I add column organisation_id bigint references organisations (id)', name);
    end loop;
end
$$;

update alarms a set organisation_id = g.organisation_id from gateways g where g.id = a.gateway_id;
update tickets t set organisation_id = g.organisation_id from gateways g where g.id = t.gateway_id;
update commands c set organisation_id = g.organisation_id
    from units u join gateways g on g.id = u.gateway_id where u.id = c.unit_id;
update share_links l set organisation_id = g.organisation_id
    from units u join gateways g on g.id = u.gateway_id where u.id = l.unit_id;

-- Rows take their site's owner when they are made, whoever makes them. The site's row is locked
-- (for share) so that a change of owner cannot slip in between: a row made during a move gets
-- the owner the move leaves behind it, or moves with it.
create function chillcloud_owner_of_gateway() returns trigger
language plpgsql as $$
begin
    select organisation_id into new.organisation_id from gateways where id = new.gateway_id for share;
    return new;
end
$$;
create function chillcloud_owner_of_unit() returns trigger
language plpgsql as $$
begin
    select g.organisation_id into new.organisation_id from units u join gateways g on g.id = u.gateway_id
        where u.id = new.unit_id for share of g;
    return new;
end
$$;
create trigger owner before insert on alarms for each row execute function chillcloud_owner_of_gateway();
create trigger owner before insert on tickets for each row execute function chillcloud_owner_of_gateway();
create trigger owner before insert on commands for each row execute function chillcloud_owner_of_unit();
create trigger owner before insert on share_links for each row execute function chillcloud_owner_of_unit();

-- On a change of owner: open alarms and tickets go with the site, links to its units end, and a
-- first owner adopts the site's earlier rows. It runs as the schema's owner: the administrator
-- moving the site through the API may not update commands, and must not miss rows it cannot see.
create function chillcloud_site_moved() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
    if new.organisation_id is not distinct from old.organisation_id then
        return new;
    end if;
    -- Who acknowledged or shelved an open alarm under the previous owner stays in the audit log,
    -- not in what the new owner reads.
    if old.organisation_id is not null then
        update alarm_events e set actor = 'previous owner' from alarms a
            where a.id = e.alarm_id and a.gateway_id = new.id and a.closed_at is null and e.actor is not null;
        update alarms set acknowledged_by = 'previous owner'
            where gateway_id = new.id and closed_at is null and acknowledged_by is not null;
    end if;
    update alarms set organisation_id = new.organisation_id
        where gateway_id = new.id and (closed_at is null or organisation_id is null and old.organisation_id is null);
    update tickets set organisation_id = new.organisation_id
        where gateway_id = new.id and (status <> 'closed' or organisation_id is null and old.organisation_id is null);
    update commands set organisation_id = new.organisation_id
        where organisation_id is null and old.organisation_id is null
          and unit_id in (select id from units where gateway_id = new.id);
    update share_links set revoked_at = now()
        where revoked_at is null and unit_id in (select id from units where gateway_id = new.id);
    return new;
end
$$;
create trigger site_moved after update of organisation_id on gateways
    for each row execute function chillcloud_site_moved();

drop policy tenant on alarms;
create policy tenant on alarms to chillcloud_api
    using (chillcloud_sees(organisation_id) and exists (select 1 from gateways g where g.id = alarms.gateway_id));
drop policy tenant on tickets;
create policy tenant on tickets to chillcloud_api
    using (chillcloud_sees(organisation_id) and exists (select 1 from gateways g where g.id = tickets.gateway_id));
drop policy tenant on commands;
create policy tenant on commands to chillcloud_api
    using (chillcloud_sees(organisation_id) and exists (select 1 from units u where u.id = commands.unit_id));
drop policy tenant on share_links;
create policy tenant on share_links to chillcloud_api
    using (chillcloud_sees(organisation_id) and exists (select 1 from units u where u.id = share_links.unit_id));

-- API requests log in as chillcloud_api itself (no superuser connection switching roles, which
-- a statement could undo), with a password the server keeps here (readable by the schema's
-- owner only: nothing is granted on it) and sets at start. A request's statement cannot run for
-- more than 15 s, nor its transaction sit idle for more than a minute, so no customer's request
-- can hold a connection the others need. Where the server's user may not alter roles, an
-- administrator does this beforehand and gives the server `--api-database-url`.
create table server_secrets (
    name text primary key,
    value text not null
);
-- Under row security with no policy, like every table: even a grant by mistake shows nothing.
alter table server_secrets enable row level security;
do $$
begin
    alter role chillcloud_api login;
    alter role chillcloud_api set statement_timeout = '15s';
    alter role chillcloud_api set idle_in_transaction_session_timeout = '60s';
exception when insufficient_privilege then
    raise notice 'chillcloud_api must be given LOGIN and its timeouts by an administrator';
end
$$;
