-- Messages about an alarm acknowledged before they went out are cancelled, not sent; a
-- message's timeouts are counted in a column of their own (digests rewrite its parameters);
-- an incident resumed after its alarm cleared and came back starts its ladder again.
alter table outbox drop constraint outbox_status_check;
alter table outbox add constraint outbox_status_check
    check (status in ('pending', 'sending', 'sent', 'failed', 'merged', 'cancelled'));
alter table outbox add column timeouts integer not null default 0;
create index outbox_by_alarm on outbox (alarm_id, person_id);
create index outbox_by_digest on outbox (merged_into) where merged_into is not null;
create index outbox_by_address on outbox (address, sent_at) where status = 'sent';
alter table incidents add column resumed integer not null default 0;
