-- E-mail beside SMS: an outbox message may go to an e-mail address.
alter table outbox drop constraint outbox_channel_check;
alter table outbox add constraint outbox_channel_check check (channel in ('sms', 'email', 'webhook', 'console'));
