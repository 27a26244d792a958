import HTTPTypes

extension HTTPFields {
    /// The value of the field named `name`, as `self[name]` gives it, without the copy: the
    /// subscript joins the values of every field of that name into a new string, even of one,
    /// which (for the token of every request) showed in a relay's profile.
    func value(of name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            guard found == nil else { return self[name] }  // several: joined, as the subscript does
            found = field.value
        }
        return found
    }
}
