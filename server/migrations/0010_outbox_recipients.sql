-- Several server processes may share one outbox. A recipient is held by one sender at a time
-- (a lease, so a crashed sender lets go), which keeps the per-recipient gap, daily cap and
-- digests true across processes; a message remembers which claim it is under, and a sender
-- only updates a message while its claim stands.
create table outbox_recipients (
    address text primary key,
    claim bigint not null,
    held_until timestamptz not null
);
alter table outbox add column claim bigint;

-- A provider that timed out on a message may have sent it: before the message goes anywhere
-- again, that provider is asked whether it did.
alter table outbox add column unsure_provider text;
alter table outbox add column unsure_since timestamptz;
