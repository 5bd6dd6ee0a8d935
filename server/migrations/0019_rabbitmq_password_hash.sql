-- The gateway's password hashed as RabbitMQ stores it (rabbit_password_hashing_sha256), for the
-- clustered broker tier (server/src/rabbitmq_users.rs); null for gateways provisioned before it,
-- until add-gateway gives them a new password.
alter table gateways add column rabbitmq_password_hash text;
