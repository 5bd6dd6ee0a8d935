# Starts thingsboard-gateway (a baseline peer of the P3 footprint benchmark)
# exactly as its `thingsboard-gateway` console script does, with two shims so it
# runs against a plain MQTT broker instead of a ThingsBoard server:
#  1. After connecting, the gateway sends the RPC "getSessionLimits" and publishes
#     NOTHING until a ThingsBoard server answers it (that RPC has no timeout, and no
#     config switch skips it). Here the request is answered in-process with what a
#     ThingsBoard server answers when it sets no rate limits.
#  2. Its phone-home update check (HTTPS POST to updates.thingsboard.io at start
#     and hourly, no config switch) is a no-op: no outside network here.
# Polling, conversion, storage and publishing are untouched.
# Run with the venv's python; the config dir comes from $TB_GW_CONFIG_DIR.
import sys

from tb_device_mqtt import TBDeviceMqttClient
from thingsboard_gateway.tb_utility.tb_updater import TBUpdater

NO_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100,
             "rateLimits": {}, "gatewayRateLimits": {}}


def answer_session_limits(self, callback):
    callback(None, dict(NO_LIMITS), None)


TBDeviceMqttClient.request_service_configuration = answer_session_limits
TBUpdater.check_for_new_version = lambda self: None

from thingsboard_gateway.tb_gateway import daemon  # noqa: E402

sys.exit(daemon())
