#ifndef CM_LIB_H
#define CM_LIB_H
/*
 * lib.h - common includes and small macros for every clustermail source file.
 *
 * src/lib is the generic layer: it has no knowledge of mail, locks or
 * clusters. Everything else includes this header first.
 */
#ifdef HAVE_CONFIG_H
/* Angle brackets on purpose: "config.h" would find src/lib/config.h (the
   configuration file parser) next to this file instead of configure's. */
#  include <config.h>
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <string.h>
#include <errno.h>

/* Number of elements of a true array (not a pointer). */
#define N_ELEMENTS(arr) (sizeof(arr) / sizeof((arr)[0]))

#define ATTR_FORMAT(fmt_idx, arg_idx) \
	__attribute__((format(printf, fmt_idx, arg_idx)))
#define ATTR_NORETURN __attribute__((noreturn))
#define ATTR_UNUSED __attribute__((unused))
#define ATTR_WARN_UNUSED __attribute__((warn_unused_result))

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Recover the struct that embeds a member (evaluates ptr once). */
#define CONTAINER_OF(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#include "mem.h"
#include "log.h"

#endif
