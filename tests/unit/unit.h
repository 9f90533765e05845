#ifndef CM_UNIT_H
#define CM_UNIT_H
/*
 * unit.h - shared helpers for the Check unit test programs.
 *
 * Each tests/unit/test-*.c builds one or more Suites and returns
 * unit_run()'s status from main(). Exit status 77 means "skipped" to
 * automake; a test program that cannot run here prints why first.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNIT_EXIT_SKIP 77

/* Run every suite; 0 when all tests passed, 1 otherwise. */
static inline int unit_run(Suite *const *suites, size_t count)
{
	SRunner *runner = srunner_create(suites[0]);
	int failed;

	for (size_t i = 1; i < count; i++)
		srunner_add_suite(runner, suites[i]);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Print a reason and exit with the automake skip status. */
static inline void unit_skip(const char *reason)
{
	printf("SKIP: %s\n", reason);
	exit(UNIT_EXIT_SKIP);
}

/* Remove every entry of a flat test directory (files, and empty
   subdirectories), keeping the directory itself. */
static inline void unit_remove_dir_contents(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *d;
	char entry[512];

	if (dir == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		snprintf(entry, sizeof(entry), "%s/%s", path, d->d_name);
		if (unlink(entry) < 0)
			(void)rmdir(entry);
	}
	closedir(dir);
}

#endif
