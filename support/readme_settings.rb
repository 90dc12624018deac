# frozen_string_literal: true

# The configuration reference's table of `nightmare` settings
# (docs/configuration.md) is made from the front's own table
# (ext/nightmare/front/src/config/settings.rs), so the two cannot disagree:
# `rake readme` writes it between these markers, and a test fails when the
# page holds another one.
module ReadmeSettings
  BEGIN_MARK = "<!-- settings: written by `rake readme` from ext/nightmare/front/src/config/settings.rs -->\n"
  END_MARK = "<!-- /settings -->\n"
  PATTERN = /#{Regexp.escape(BEGIN_MARK)}.*?#{Regexp.escape(END_MARK)}/m

  module_function

  def section = "#{BEGIN_MARK}#{Nightmare::Native.settings_table}#{END_MARK}"

  # The page's current section, or nil without the markers.
  def current(readme) = readme[PATTERN]

  def write(path)
    readme = File.read(path)
    current(readme) or abort "#{path} has no #{BEGIN_MARK.strip} ... #{END_MARK.strip} section"
    File.write(path, readme.sub(PATTERN) { section })
  end
end
