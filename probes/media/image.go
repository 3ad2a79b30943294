package media

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // thumbnails may come as GIF
	_ "image/jpeg" // thumbnails of a PNG may come as JPEG
	"image/png"

	"github.com/mxprobe/mxprobe/probes"
	"strings"
)

// imageSide is the generated image's width and height: above the 32x32
// thumbnail every homeserver generates by default, so the thumbnail is a
// real scaling of the upload, and small enough to stay a few hundred bytes.
const imageSide = 64

// newImage returns a PNG that is unique to this upload: a square of one
// colour with the nonce's bits drawn as a row of pixels, so the image
// itself (not a metadata chunk a server might strip) differs between
// uploads.
func newImage() ([]byte, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	return imageFor(nonce)
}

func imageFor(nonce [16]byte) ([]byte, error) {
	img := image.NewPaletted(image.Rect(0, 0, imageSide, imageSide), color.Palette{
		color.RGBA{R: nonce[0], G: nonce[1], B: nonce[2], A: 0xff},
		color.RGBA{R: 0xff - nonce[0], G: 0xff - nonce[1], B: 0xff - nonce[2], A: 0xff},
	})
	for i := range 128 {
		if nonce[i/8]>>(i%8)&1 == 1 {
			// Two rows of 64 pixels in the middle of the image.
			img.SetColorIndex(i%imageSide, imageSide/2+i/imageSide, 1)
		}
	}
	var b bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkImage reports why body, served as contentType, is not an image: a
// content type that is not image/*, or bytes that no decoder recognises
// (PNG, JPEG, GIF; WebP by its signature).
func checkImage(contentType string, body []byte) error {
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]))
	if !strings.HasPrefix(ct, "image/") {
		return fmt.Errorf("content type %q is not an image", probes.CutText(contentType, 64))
	}
	if len(body) == 0 {
		return errors.New("empty body")
	}
	if ct == "image/webp" {
		if len(body) >= 12 && string(body[:4]) == "RIFF" && string(body[8:12]) == "WEBP" {
			return nil
		}
		return errors.New("served as image/webp but not a WebP file")
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("served as %s but not a decodable image: %v", ct, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fmt.Errorf("%s image of %dx%d pixels", format, cfg.Width, cfg.Height)
	}
	return nil
}
