-- API handlers no longer see the owner's pool: everything a viewer does runs under row
-- security. A user's own sessions and API tokens are theirs to list, make and end whatever their
-- organisation (a customer's owner manages their tokens too); `chillcloud.user` is set beside
-- `chillcloud.scope` by every viewer's transaction ('' for the operator's token: no own rows).
create policy own on sessions to chillcloud_api
    using (user_id = nullif(current_setting('chillcloud.user', true), '')::bigint);
create policy own on api_tokens to chillcloud_api
    using (user_id = nullif(current_setting('chillcloud.user', true), '')::bigint);
