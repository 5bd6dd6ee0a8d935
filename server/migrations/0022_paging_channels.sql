-- Paging channels beyond SMS and e-mail (issue: paging that wakes people): voice calls, team
-- chat rooms and Web Push, each person's channels and quiet hours, and what voice providers
-- report of their calls.

alter table outbox drop constraint outbox_channel_check;
alter table outbox add constraint outbox_channel_check
    check (channel in ('sms', 'email', 'voice', 'push', 'chat', 'webhook', 'console'));
-- A chat message goes to a room, not a person.
alter table outbox add column chat_room_id bigint;
-- Held by the person's quiet hours until then: folded into no digest before, and not sent at
-- all if its alarm cleared meanwhile.
alter table outbox add column not_before timestamptz;
-- A recipient's allowance (one message per gap, so many a day) is counted per channel: an SMS
-- does not hold back the call that follows it.
create index outbox_by_channel_address on outbox (channel, address, sent_at) where status = 'sent';

-- The account a paged person signs in with: their own channels, quiet hours and devices.
alter table people add column user_id bigint unique references users (id);
create policy own on people for select to chillcloud_api
    using (user_id = nullif(current_setting('chillcloud.user', true), '')::bigint);

-- The viewer's own person, for the policies below.
create function chillcloud_own_person(person bigint) returns boolean language sql stable as $$
    select exists (select 1 from people p where p.id = person
                   and p.user_id = nullif(current_setting('chillcloud.user', true), '')::bigint)
$$;

-- How a person wants to be reached: channels in order (the policy's own channels win for a
-- level that names them), and quiet hours in their time zone, which hold grade 3 and 4 messages.
create table paging_preferences (
    person_id bigint primary key references people (id),
    channels text[] not null check (channels <@ array['push', 'sms', 'voice', 'email']
                                    and cardinality(channels) between 1 and 4),
    quiet_from time,
    quiet_to time,
    timezone text not null default 'UTC' check (length(timezone) <= 64),
    check ((quiet_from is null) = (quiet_to is null)),
    updated_at timestamptz not null default now()
);
alter table paging_preferences enable row level security;
create policy service on paging_preferences to chillcloud_api using (chillcloud_service());
create policy own on paging_preferences to chillcloud_api
    using (chillcloud_own_person(person_id)) with check (chillcloud_own_person(person_id));

-- A person's browsers subscribed to Web Push (RFC 8030): where to post and the keys to encrypt
-- for (RFC 8291). At most 10 per person.
create table push_subscriptions (
    id bigint generated always as identity primary key,
    person_id bigint not null references people (id),
    endpoint text not null unique check (length(endpoint) <= 1024),
    p256dh text not null check (length(p256dh) <= 100),
    auth text not null check (length(auth) <= 40),
    user_agent text not null default '' check (length(user_agent) <= 300),
    created_at timestamptz not null default now(),
    last_sent_at timestamptz
);
create index push_subscriptions_by_person on push_subscriptions (person_id);
alter table push_subscriptions enable row level security;
create policy service on push_subscriptions to chillcloud_api using (chillcloud_service());
create policy own on push_subscriptions to chillcloud_api
    using (chillcloud_own_person(person_id)) with check (chillcloud_own_person(person_id));

-- A person's own test messages ("send me a test"): they may make and see those, nothing else.
create policy own_tests on outbox for select to chillcloud_api
    using (chillcloud_own_person(person_id) and idempotency_key like 'test-%' and alarm_id is null
           and ticket_id is null);
create policy own_tests_made on outbox for insert to chillcloud_api
    with check (chillcloud_own_person(person_id) and idempotency_key like 'test-%' and alarm_id is null
                and ticket_id is null);

-- Team chat rooms (group robots) a site's alarms are posted to; no site: every site. The
-- webhook URL (which holds the robot's key) and signing secret are never shown again.
create table chat_rooms (
    id bigint generated always as identity primary key,
    gateway_id text references gateways (id) on delete cascade,
    kind text not null check (kind in ('wecom', 'dingtalk', 'feishu', 'slack')),
    name text not null check (length(name) between 1 and 100),
    url text not null check (length(url) <= 500),
    secret text check (length(secret) <= 200),
    language text not null default 'zh' check (language in ('en', 'zh')),
    created_at timestamptz not null default now()
);
create index chat_rooms_by_site on chat_rooms (gateway_id);
alter table outbox add constraint outbox_chat_room foreign key (chat_room_id) references chat_rooms (id)
    on delete set null;
alter table chat_rooms enable row level security;
create policy service on chat_rooms to chillcloud_api using (chillcloud_service()) with check (chillcloud_service());

-- What voice providers report of a call: its status and the keys pressed. A keypress
-- acknowledges; a report about a call whose request timed out shows it was placed.
create table voice_events (
    id bigint generated always as identity primary key,
    provider text not null,
    call_id text not null check (length(call_id) <= 100),
    -- The outbox message, when the provider echoes ours (Aliyun OutId) or its call id is known.
    outbox_id bigint references outbox (id) on delete set null,
    number text not null default '' check (length(number) <= 32),
    status text not null default '' check (length(status) <= 40),
    digits text not null default '' check (length(digits) <= 20),
    received_at timestamptz not null default now()
);
create index voice_events_by_message on voice_events (outbox_id);
create index voice_events_by_number on voice_events (number, received_at);
alter table voice_events enable row level security;
create policy service on voice_events to chillcloud_api using (chillcloud_service());

grant select, insert, update, delete on paging_preferences, push_subscriptions, chat_rooms to chillcloud_api;
grant usage, select on sequence push_subscriptions_id_seq, chat_rooms_id_seq to chillcloud_api;
-- voice_events is the server's own (its hooks and the outbox): no grant.
