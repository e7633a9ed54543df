/* compat.h: every hiredis version difference (0.14 vs 1.x), and nothing else.
 * Threading: declarations only; safe from any thread. */
#ifndef VPS_COMPAT_H
#define VPS_COMPAT_H

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#if defined(HIREDIS_MAJOR) && HIREDIS_MAJOR >= 1
#define VPS_HIREDIS_1 1
#else
#define VPS_HIREDIS_1 0
#endif

/* 0.14 names the reader constructor in hiredis.h, 1.x in read.h; both spell it the same. */
#define vps_reader_new() redisReaderCreate()
#define vps_reader_free(r) redisReaderFree(r)
#define vps_reader_feed(r, buf, len) redisReaderFeed((r), (buf), (len))
#define vps_reader_next(r, out) redisReaderGetReply((r), (out))
#define vps_reply_free(reply) freeReplyObject(reply)

/* 1.x may return RESP3 push frames; we speak RESP2, where pub/sub frames are arrays. */
#ifdef REDIS_REPLY_PUSH
#define VPS_IS_PUSH_FRAME(t) ((t) == REDIS_REPLY_ARRAY || (t) == REDIS_REPLY_PUSH)
#else
#define VPS_IS_PUSH_FRAME(t) ((t) == REDIS_REPLY_ARRAY)
#endif

/* the version string reported by stats() */
#define VPS_HIREDIS_VERSION_STR                                                        \
    VPS_STR(HIREDIS_MAJOR) "." VPS_STR(HIREDIS_MINOR) "." VPS_STR(HIREDIS_PATCH)
#define VPS_STR_(x) #x
#define VPS_STR(x) VPS_STR_(x)

#endif
