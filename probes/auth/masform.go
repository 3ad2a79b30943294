package auth

import (
	"bytes"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// HTMLForm is the part of an HTML form a headless login needs.
type HTMLForm struct {
	Action string // resolved against the page URL
	Method string // upper case; GET when absent
	Inputs []FormInput
	Title  string // the page's <title>, for error messages
}

// FormInput is one named control of a form. Checked is set for checkboxes
// and radio buttons that are checked; Disabled controls are never submitted.
type FormInput struct {
	Name, Type, Value string
	Checked, Disabled bool
}

// Link is an <a href> of a page, resolved against the page URL.
type Link struct {
	URL  *url.URL
	Text string
}

// Page is what a headless browser needs of an HTML page: its forms, links,
// title and heading (for messages), and whether a script submits a form.
type Page struct {
	Title   string
	Heading string // the first <h1>
	Lead    string // the first paragraph after it
	Error   string // the first form error message (class text-critical or error)
	Forms   []*HTMLForm
	Links   []Link
	// AutoSubmit: a script on the page submits a form by itself (the
	// form_post answers of OAuth providers and MAS).
	AutoSubmit bool
}

// has reports whether the form has an input of that name.
func (f *HTMLForm) has(name string) bool {
	for _, in := range f.Inputs {
		if in.Name == name {
			return true
		}
	}
	return false
}

// value returns the value of the named input.
func (f *HTMLForm) value(name string) string {
	for _, in := range f.Inputs {
		if in.Name == name {
			return in.Value
		}
	}
	return ""
}

// hasType reports whether the form has an input of the given type.
func (f *HTMLForm) hasType(typ string) (string, bool) {
	for _, in := range f.Inputs {
		if in.Type == typ {
			return in.Name, true
		}
	}
	return "", false
}

// hidden returns the form's hidden inputs as values to post back.
func (f *HTMLForm) hidden() url.Values {
	v := url.Values{}
	for _, in := range f.Inputs {
		if in.Type == "hidden" && in.Name != "" {
			v.Set(in.Name, in.Value)
		}
	}
	return v
}

// browserValues are the values a browser submits for the form when its
// first submit button is pressed: every named, enabled control with its own
// value (hidden, text, readonly ones too), checked boxes ("on" without a
// value), and the pressed button's name and value.
func (f *HTMLForm) browserValues() url.Values {
	v := url.Values{}
	pressed := false
	for _, in := range f.Inputs {
		if in.Name == "" || in.Disabled {
			continue
		}
		switch in.Type {
		case "checkbox", "radio":
			if in.Checked {
				val := in.Value
				if val == "" {
					val = "on"
				}
				v.Add(in.Name, val)
			}
		case "button-submit", "submit", "image":
			if !pressed {
				pressed = true
				v.Add(in.Name, in.Value)
			}
		case "button-button", "button-reset", "reset", "button", "file":
		default:
			v.Add(in.Name, in.Value)
		}
	}
	return v
}

// postsTo reports whether the form's action path ends with suffix.
func (f *HTMLForm) postsTo(suffix string) bool {
	u, err := url.Parse(f.Action)
	return err == nil && strings.HasSuffix(strings.TrimRight(u.Path, "/"), suffix)
}

// parseForms returns the forms of an HTML page (the title is copied into
// each) and the page's title. Action URLs are resolved against base.
func parseForms(body []byte, base *url.URL) ([]*HTMLForm, string) {
	p := parsePage(body, base)
	return p.Forms, p.Title
}

// maxPageItems bounds what a page may make the parser keep.
const maxPageItems = 200

// parsePage parses an HTML page. Action and link URLs are resolved against
// base; what cannot be resolved is dropped (links) or left as the page URL
// (form actions, as a browser does).
func parsePage(body []byte, base *url.URL) *Page {
	p := &Page{}
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		return p
	}
	var cur *HTMLForm
	afterH1 := false
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "title":
				if n.FirstChild != nil && p.Title == "" {
					p.Title = strings.TrimSpace(n.FirstChild.Data)
				}
			case "h1":
				if p.Heading == "" {
					p.Heading = textOf(n)
					afterH1 = true
					return
				}
			case "div", "span", "p":
				if c := attr(n, "class"); p.Error == "" && (strings.Contains(c, "text-critical") || strings.Contains(c, "error")) {
					p.Error = textOf(n)
				}
				if n.Data == "p" && afterH1 && p.Lead == "" {
					p.Lead = textOf(n)
				}
			case "script":
				if n.FirstChild != nil && strings.Contains(n.FirstChild.Data, ".submit()") {
					p.AutoSubmit = true
				}
			case "a":
				if href := attr(n, "href"); href != "" && len(p.Links) < maxPageItems {
					if u, err := base.Parse(href); err == nil {
						p.Links = append(p.Links, Link{URL: u, Text: textOf(n)})
					}
				}
			case "form":
				f := &HTMLForm{Method: strings.ToUpper(attr(n, "method"))}
				if f.Method != "POST" {
					f.Method = "GET"
				}
				act := attr(n, "action")
				if u, err := base.Parse(act); err == nil && act != "" {
					f.Action = u.String()
				} else {
					f.Action = base.String()
				}
				if len(p.Forms) < maxPageItems {
					p.Forms = append(p.Forms, f)
				}
				prev := cur
				cur = f
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = prev
				return
			case "input":
				if cur != nil && len(cur.Inputs) < maxPageItems {
					typ := strings.ToLower(attr(n, "type"))
					if typ == "" {
						typ = "text"
					}
					cur.Inputs = append(cur.Inputs, FormInput{Name: attr(n, "name"), Type: typ, Value: attr(n, "value"),
						Checked: hasAttr(n, "checked"), Disabled: hasAttr(n, "disabled")})
				}
			case "textarea":
				if cur != nil && attr(n, "name") != "" && len(cur.Inputs) < maxPageItems {
					cur.Inputs = append(cur.Inputs, FormInput{Name: attr(n, "name"), Type: "textarea", Value: textOf(n),
						Disabled: hasAttr(n, "disabled")})
				}
			case "button":
				if cur != nil && attr(n, "name") != "" && len(cur.Inputs) < maxPageItems {
					typ := strings.ToLower(attr(n, "type"))
					if typ == "" {
						typ = "submit"
					}
					cur.Inputs = append(cur.Inputs, FormInput{Name: attr(n, "name"), Type: "button-" + typ, Value: attr(n, "value"),
						Disabled: hasAttr(n, "disabled")})
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	for _, f := range p.Forms {
		f.Title = p.Title
	}
	return p
}

// textOf is the whitespace-collapsed text content of a node (bounded).
func textOf(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if b.Len() > 500 {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// postForm picks the page's first POST form, or its first form.
func postForm(forms []*HTMLForm) *HTMLForm {
	for _, f := range forms {
		if f.Method == "POST" {
			return f
		}
	}
	if len(forms) > 0 {
		return forms[0]
	}
	return nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, key string) bool {
	for _, a := range n.Attr {
		if a.Key == key {
			return true
		}
	}
	return false
}
