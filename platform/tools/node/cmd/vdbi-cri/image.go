package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// Applets linked to busybox in the image.
var applets = []string{"sh", "env", "cat", "echo", "sleep", "ls", "true"}

// buildImageCmd writes a single-layer OCI image archive around a static busybox binary, so the
// node needs no registry.
func buildImageCmd(args []string) error {
	fs := flag.NewFlagSet("build-image", flag.ContinueOnError)
	busybox := fs.String("busybox", "/bin/busybox", "static busybox binary")
	out := fs.String("out", "", "output OCI archive (tar)")
	ref := fs.String("ref", "", "image reference, e.g. docker.io/vdbi/busybox:local")
	var cmd, add listFlags
	fs.Var(&cmd, "cmd", "default command argument (repeatable)")
	fs.Var(&add, "add", "SRC=DST: also put file SRC at DST in the image, mode 0755 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *ref == "" {
		return errors.New("build-image needs -out and -ref")
	}
	bin, err := os.ReadFile(*busybox)
	if err != nil {
		return err
	}
	extra := map[string][]byte{}
	for _, a := range add {
		src, dst, ok := strings.Cut(a, "=")
		if !ok || dst == "" {
			return fmt.Errorf("-add %q: want SRC=DST", a)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		extra[strings.TrimPrefix(dst, "/")] = data
	}
	archive, err := ociArchive(bin, extra, *ref, cmd)
	if err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, archive, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, *out)
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func describe(mediaType string, blob []byte) descriptor {
	sum := sha256.Sum256(blob)
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: len(blob)}
}

// epoch keeps the archive byte-for-byte reproducible.
var epoch = time.Unix(0, 0).UTC()

func tarBytes(write func(tw *tar.Writer) error) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := write(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func rootfsLayer(busybox []byte, extra map[string][]byte) ([]byte, error) {
	return tarBytes(func(tw *tar.Writer) error {
		for _, dir := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "run/"} {
			if err := tw.WriteHeader(&tar.Header{Name: dir, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
		if err := addFile(tw, "bin/busybox", 0o755, busybox); err != nil {
			return err
		}
		for _, a := range applets {
			if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch, Typeflag: tar.TypeSymlink}); err != nil {
				return err
			}
		}
		names := make([]string, 0, len(extra))
		for name := range extra {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if err := addFile(tw, name, 0o755, extra[name]); err != nil {
				return err
			}
		}
		return nil
	})
}

func ociArchive(busybox []byte, extra map[string][]byte, ref string, cmd []string) ([]byte, error) {
	layer, err := rootfsLayer(busybox, extra)
	if err != nil {
		return nil, err
	}
	layerDesc := describe("application/vnd.oci.image.layer.v1.tar", layer)
	if len(cmd) == 0 {
		cmd = []string{"/bin/sh"}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := describe("application/vnd.oci.image.config.v1+json", config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := describe("application/vnd.oci.image.manifest.v1+json", manifest)
	tag := ref[strings.LastIndex(ref, ":")+1:]
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": tag,
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{manifestDesc},
	})
	if err != nil {
		return nil, err
	}
	return tarBytes(func(tw *tar.Writer) error {
		if err := addFile(tw, "oci-layout", 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return err
		}
		if err := addFile(tw, "index.json", 0o644, index); err != nil {
			return err
		}
		for _, blob := range [][]byte{layer, config, manifest} {
			d := describe("", blob)
			name := "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
			if err := addFile(tw, name, 0o644, blob); err != nil {
				return fmt.Errorf("add %s: %w", name, err)
			}
		}
		return nil
	})
}
