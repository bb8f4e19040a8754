// Package guest builds the podvm guest assets: the kernel (kernel/build.sh
// and the committed config) and the initramfs whose /init is the agent
// (package initramfs and command mkinitramfs).
package guest
