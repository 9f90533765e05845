#ifndef CM_LOCK_DLM_DEVICE_H
#define CM_LOCK_DLM_DEVICE_H
/*
 * lock-dlm-device - the one request we write to the DLM control device
 * ourselves. libdlm's dlm_release_lockspace() needs an open handle and
 * does not report the kernel's answer (EBUSY while locks remain), and
 * the kernel's request structure (linux/dlm_device.h) cannot be included
 * next to libdlm.h, hence a file of its own.
 */

#define LOCK_DLM_DEVICE_CONTROL "/dev/misc/dlm-control"

/* Drop one create reference on the lockspace whose misc device has this
   minor number (CAP_SYS_ADMIN). 0, or -errno: -EBUSY (the last reference,
   and locks remain), -ENOENT (no such lockspace), -EPERM ... */
int lock_dlm_device_remove(unsigned int minor);

#endif
