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

type FormInput struct {
	Name, Type, Value string
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

// parseForms returns the forms of an HTML page (the title is copied into
// each) and the page's title. Action URLs are resolved against base.
func parseForms(body []byte, base *url.URL) ([]*HTMLForm, string) {
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, ""
	}
	var forms []*HTMLForm
	var title string
	var cur *HTMLForm
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "title":
				if n.FirstChild != nil && title == "" {
					title = strings.TrimSpace(n.FirstChild.Data)
				}
			case "form":
				f := &HTMLForm{Method: strings.ToUpper(attr(n, "method"))}
				if f.Method == "" {
					f.Method = "GET"
				}
				act := attr(n, "action")
				if u, err := base.Parse(act); err == nil && act != "" {
					f.Action = u.String()
				} else {
					f.Action = base.String()
				}
				forms = append(forms, f)
				prev := cur
				cur = f
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = prev
				return
			case "input":
				if cur != nil {
					typ := strings.ToLower(attr(n, "type"))
					if typ == "" {
						typ = "text"
					}
					cur.Inputs = append(cur.Inputs, FormInput{Name: attr(n, "name"), Type: typ, Value: attr(n, "value")})
				}
			case "button":
				if cur != nil && attr(n, "name") != "" {
					typ := strings.ToLower(attr(n, "type"))
					if typ == "" {
						typ = "submit"
					}
					cur.Inputs = append(cur.Inputs, FormInput{Name: attr(n, "name"), Type: "button-" + typ, Value: attr(n, "value")})
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	for _, f := range forms {
		f.Title = title
	}
	return forms, title
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
