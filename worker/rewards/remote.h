/*
 * remote.h: the client of a user's reward server (spec architecture.md, "Rewards"), so that a
 * grpo run can train on, or log beside its own reward, any model the user serves over HTTP
 * (HPSv3, PickScore, a CLIP score; deploy/reward-server/ is an example).
 *
 * The protocol, JSON over HTTP:
 *   GET  /v1/health -> 2xx                         (asked once, when the client opens)
 *   POST /v1/score  {"request_id", "reward", "items": [{"id", "prompt", "image_png_b64"}]}
 *               ->  {"request_id", "results": [{"id", "score"} or {"id", "error"}]}
 * Images go as PNG in base64; nothing is ever unpickled or executed. A request that fails to
 * connect, times out or gets HTTP 429 or 5xx is retried with the same request_id (a server may
 * use it to answer a repeat from its cache) after a back-off that doubles from 0.5 s up to 30 s;
 * any other 4xx, or a 2xx whose answer breaks the protocol, ends the scoring with a message that
 * names the URL and the field. An item the server answers with an "error" is a per-item failure:
 * its score is NAN and the caller decides what to do with it; when more than half of a call's
 * images fail, the call fails (a server that scores so little is broken, not flaky).
 *
 * The client is not thread-safe: one per run.
 */
#ifndef CHUNKGRPO_REMOTE_H
#define CHUNKGRPO_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "experiment.h" /* RemoteSettings: the server's URL ("http://host:port", a trailing '/'
                           is fine), reward name, one request's time limit, retries of a request
                           that may succeed when repeated, items per request */

/* What one call of remote_reward_score met besides the scores. */
typedef struct {
    int item_errors;       /* items answered with an error (their scores are NAN) */
    int retries;           /* requests repeated */
    int requests;          /* requests that got their answer */
    char first_error[256]; /* the first item error's message, "" when none */
} RemoteScoreStats;

typedef struct RemoteReward RemoteReward;

/* Opens a client of the server s names and asks GET /v1/health (with s's retries). Every request
 * carries "Authorization: Bearer $CHUNKGRPO_REMOTE_TOKEN" when that is set (a secret stays out of
 * configs, which the control server stores and shows). Returns NULL with a message naming the
 * URL when the server cannot be reached or answers with an error. */
RemoteReward *remote_reward_open(const RemoteSettings *s, char *err, size_t errlen);
void remote_reward_close(RemoteReward *rr);

/* Scores n images imgs [n, S, S, C] (values in [-1, 1], converted as the PNG files the worker
 * writes), image i with prompts[i], in requests of the settings' batch of items whose request_id is
 * "<client>-<tag>-<k>" for the k-th request, <client> a tag of this process and the moment the
 * client opened (so that a server caching answers by request_id never hands one run another's).
 * Item ids are the images' indices as decimal strings. Fills scores [n] (NAN for an item answered
 * with an error) and *st. Returns 0, or -1 with a message naming the URL when a request failed for
 * good or broke the protocol, or naming `what` (the images' batch: "iteration 3") when the server
 * failed on more than half of them. */
int remote_reward_score(RemoteReward *rr, const char *tag, const char *what, int n,
                        const char *const *prompts, const float *imgs, int S, int C, float *scores,
                        RemoteScoreStats *st, char *err, size_t errlen);

/* ---- exposed for the unit tests ---- */

/* Standard base64 (RFC 4648, with padding) of data [len] into a malloc'd string, or NULL. */
char *base64_encode(const uint8_t *data, size_t len);

/* Reads a /v1/score answer `body` for the request `request_id` whose items have the ids
 * first .. first + count - 1: sets scores[id - first] (NAN for an item error) and adds the item
 * errors to *st. Returns 0, or -1 with a message naming the field that breaks the protocol
 * (not JSON, another request_id, a result whose id is unknown or repeated, an item without an
 * answer, a score that is not a finite number). */
int remote_parse_results(const char *body, const char *request_id, int first, int count,
                         float *scores, RemoteScoreStats *st, char *err, size_t errlen);

#endif
