// SPDX-License-Identifier: GPL-2.0-only
// falco-probes' example kernel module: one misc device, nothing else.
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>

static const struct file_operations example_fops = {
	.owner = THIS_MODULE,
};

static struct miscdevice example_device = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "falco_probes_example",
	.fops = &example_fops,
};

static int __init example_init(void)
{
	int err = misc_register(&example_device);

	if (err == 0)
		pr_info("falco_probes_example: loaded from %s\n", __FILE__);
	return err;
}

static void __exit example_exit(void)
{
	misc_deregister(&example_device);
}

module_init(example_init);
module_exit(example_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("falco-probes example module (test stand-in for Falco's driver)");
