/*
 * uplink.h: the worker's client of the control server's worker protocol (docs/api.md,
 * "Workers"): register, lease (long poll), heartbeat, events in batches, artifact upload, list
 * and download, complete; and the framing that turns a run folder's lines into events.
 *
 * Every call is one blocking libcurl request on the Uplink's handle (connections are kept
 * alive between calls): connect time-out 5 s; JSON calls end after 60 s; file transfers have
 * no total limit (a checkpoint may be large) but end when slower than 1 KiB/s for 30 s. One
 * thread only: an Uplink is not shared.
 *
 * Return values: the HTTP status, or -1 when no answer came (refused, timed out, interrupted)
 * with the reason in err. For a status >= 400, err holds the server's error message. Replies
 * (*reply, *lease, *items) are new jansson references the caller owns, set only on 2xx.
 */
#ifndef CHUNKGRPO_UPLINK_H
#define CHUNKGRPO_UPLINK_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct Uplink Uplink;

/* A client of the server at url ("http://host:port", a trailing slash allowed) with the bearer
 * token (copied). A long-polling lease (and a registration) gives up as soon as *stop reaches 2
 * (stop may be NULL). NULL with a message when libcurl cannot start. */
Uplink *uplink_new(const char *url, const char *token, volatile sig_atomic_t *stop, char *err,
                   size_t errlen);
void uplink_free(Uplink *u);

/* POST /workers/register with caps {"name", "backend", ...}: 201 with *reply = {"worker_id",
 * "lease_seconds", "heartbeat_seconds"}. */
int uplink_register(Uplink *u, const json_t *caps, json_t **reply, char *err, size_t errlen);

/* POST /workers/WID/lease?wait=S: 200 with *lease, or 204 when nothing came in S seconds. */
int uplink_lease(Uplink *u, const char *worker_id, int wait_s, json_t **lease, char *err,
                 size_t errlen);

/* POST /workers/WID/heartbeat {"experiment_id", "progress"?} (progress borrowed, may be NULL):
 * 200 with *cancel set; 409 when the lease is no longer this worker's. */
int uplink_heartbeat(Uplink *u, const char *worker_id, int64_t experiment, const json_t *progress,
                     int *cancel, char *err, size_t errlen);

/* POST /experiments/ID/events {"worker_id", "events"} (events borrowed): 200 once stored (a
 * seq already stored is skipped by the server, so a retried batch adds nothing). */
int uplink_post_events(Uplink *u, int64_t experiment, const char *worker_id, const json_t *events,
                       char *err, size_t errlen);

/* PUT /experiments/ID/artifacts/NAME?worker_id=&iteration= (iteration < 0: none) with the file
 * at path as the body; *sent gets the stat of the bytes sent (the file may be replaced while
 * it travels: an open descriptor keeps its inode). 201 when stored. */
int uplink_upload_file(Uplink *u, int64_t experiment, const char *worker_id, const char *name,
                       int64_t iteration, const char *path, struct stat *sent, char *err,
                       size_t errlen);
/* The same with len bytes of data as the body. */
int uplink_upload_data(Uplink *u, int64_t experiment, const char *worker_id, const char *name,
                       int64_t iteration, const void *data, size_t len, char *err, size_t errlen);

/* GET /experiments/ID/artifacts/NAME into path: written to path.tmp, renamed on 200 (the .tmp
 * is removed otherwise). */
int uplink_download_file(Uplink *u, int64_t experiment, const char *name, const char *path,
                         char *err, size_t errlen);
/* GET /experiments/ID/artifacts/NAME, a short text, into buf (NUL-terminated, trailing
 * whitespace removed); a body that does not fit is an error (-1). */
int uplink_download_text(Uplink *u, int64_t experiment, const char *name, char *buf, size_t buflen,
                         char *err, size_t errlen);

/* GET /experiments/ID/artifacts: 200 with *items = the "items" array. */
int uplink_list_artifacts(Uplink *u, int64_t experiment, json_t **items, char *err, size_t errlen);

/* POST /experiments/ID/complete {"worker_id", "status", "error"?} (error may be NULL). */
int uplink_complete(Uplink *u, int64_t experiment, const char *worker_id, const char *status,
                    const char *error, char *err, size_t errlen);

/* ---- framing: run-folder lines as events (pure functions, no I/O) ---- */

/* The metrics event of one metrics.jsonl line (len bytes, no newline) whose iteration is the
 * integer field key ("iteration", or "step" for pretraining): {"seq": iteration + 1, "type":
 * "metrics", "data": {"iteration", "values": {every other numeric top-level field}}}, its
 * iteration in *iteration. NULL for a line that is not a JSON object with that field. */
json_t *uplink_metrics_event(const char *line, size_t len, const char *key, int64_t *iteration);

/* The log event of one line of the runner's output (len bytes, no newline; only the text after
 * the last carriage return counts, as a progress bar redraws there): level "error" for lines
 * that start with "chunkgrpo-worker:" or mention "error", else "info"; the message is cut to
 * UPLINK_MESSAGE_MAX bytes (at a UTF-8 boundary). NULL for a blank line. */
#define UPLINK_MESSAGE_MAX 4096
json_t *uplink_log_event(const char *line, size_t len, int64_t seq);

#endif
