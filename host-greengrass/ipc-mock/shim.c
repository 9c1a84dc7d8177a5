// Flat wrappers over AWS's Greengrass IPC mock server (mock/mock.c in
// aws-greengrass-component-sdk, compiled into its static library), so Rust
// can drive it without mirroring the layout of GgipcPacketSequence.
// Every function returns a GgError (0 = GG_ERR_OK).
#include "packets.h"
#include <gg/buffer.h>
#include <gg/ipc/mock.h>
#include <gg/ipc/packet_sequences.h>
#include <gg/map.h>
#include <string.h>

static GgBuffer buf(const char *s) {
    return (GgBuffer) { .data = (uint8_t *) s, .len = strlen(s) };
}

int verge_mock_setup(const char *prefix, const char *token) {
    return (int) gg_test_setup_ipc(prefix, 0700, token);
}

int verge_mock_accept_handshake(int timeout) {
    return (int) gg_test_accept_client_handshake(timeout);
}

int verge_mock_expect_update_state(int32_t stream, const char *state, int timeout) {
    return (int) gg_test_expect_packet_sequence(
        gg_test_update_state_accepted_sequence(stream, buf(state)), timeout
    );
}

// PublishToIoTCore with exactly this topic, payload (base64) and QoS; accepted.
int verge_mock_expect_publish_iot(
    int32_t stream, const char *topic, const char *b64, const char *qos, int timeout
) {
    return (int) gg_test_expect_packet_sequence(
        gg_test_mqtt_publish_accepted_sequence(stream, buf(topic), buf(b64), buf(qos)),
        timeout
    );
}

// The same request, answered with an IPC error (what a nucleus sends when it
// cannot take the message: nucleus lite offline, a full spooler).
int verge_mock_expect_publish_iot_error(
    int32_t stream, const char *topic, const char *b64, const char *qos,
    const char *code, const char *message, int timeout
) {
    GgipcPacketSequence seq = {
        .packets = {
            gg_test_mqtt_publish_request_packet(stream, buf(topic), buf(b64), buf(qos)),
            gg_test_ipc_error_packet(stream, buf(code), buf(message)),
        },
        .len = 2,
    };
    return (int) gg_test_expect_packet_sequence(seq, timeout);
}

// The same request, left unanswered (a nucleus about to go away).
int verge_mock_expect_publish_iot_no_reply(
    int32_t stream, const char *topic, const char *b64, const char *qos, int timeout
) {
    GgipcPacketSequence seq = {
        .packets = { gg_test_mqtt_publish_request_packet(stream, buf(topic), buf(b64), buf(qos)) },
        .len = 1,
    };
    return (int) gg_test_expect_packet_sequence(seq, timeout);
}

// Any PublishToIoTCore on this stream (headers checked, not the payload); accepted.
int verge_mock_expect_any_publish_iot(int32_t stream, int timeout) {
    GgipcPacketSequence seq = {
        .packets = {
            (GgipcPacket) {
                .direction = CLIENT_TO_SERVER,
                .has_payload = false,
                .headers = GG_IPC_REQUEST_HEADERS(stream, "aws.greengrass#PublishToIoTCore"),
                .header_count = GG_IPC_REQUEST_HEADERS_COUNT,
            },
            gg_test_mqtt_publish_accepted_packet(stream),
        },
        .len = 2,
    };
    return (int) gg_test_expect_packet_sequence(seq, timeout);
}

// The answer to a PublishToIoTCore left unanswered before: accepted.
int verge_mock_answer_publish_iot(int32_t stream, int timeout) {
    GgipcPacketSequence seq = {
        .packets = { gg_test_mqtt_publish_accepted_packet(stream) },
        .len = 1,
    };
    return (int) gg_test_expect_packet_sequence(seq, timeout);
}

// PublishToTopic (local pub/sub) of exactly this binary message (base64); accepted.
int verge_mock_expect_publish_local(
    int32_t stream, const char *topic, const char *b64, int timeout
) {
    return (int) gg_test_expect_packet_sequence(
        gg_test_local_publish_accepted_sequence(stream, buf(topic), gg_obj_buf(buf(b64))),
        timeout
    );
}

int verge_mock_disconnect(void) { return (int) gg_test_disconnect(); }

int verge_mock_wait_disconnect(int timeout) {
    return (int) gg_test_wait_for_client_disconnect(timeout);
}

void verge_mock_close(void) { gg_test_close(); }
