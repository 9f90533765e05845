/*
 * lock-dlm-device.c - see lock-dlm-device.h.
 */
#include "lib/lib.h"
#include "lock-dlm-device.h"

#include <fcntl.h>
#include <unistd.h>
#include <linux/dlm_device.h>

int lock_dlm_device_remove(unsigned int minor)
{
	struct dlm_write_request req;
	ssize_t n;
	int fd, err;

	memset(&req, 0, sizeof(req));
	req.version[0] = DLM_DEVICE_VERSION_MAJOR;
	req.version[1] = DLM_DEVICE_VERSION_MINOR;
	req.version[2] = DLM_DEVICE_VERSION_PATCH;
	req.cmd = DLM_USER_REMOVE_LOCKSPACE;
	/* The kernel reads a request without it in the 32-bit layout. */
	req.is64bit = sizeof(long) == 8;
	req.i.lspace.minor = minor;
	fd = open(LOCK_DLM_DEVICE_CONTROL, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, &req, sizeof(req));
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}
