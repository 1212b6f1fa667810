"""What every part of Herald shares: the one base error and its subclasses, the closed
vocabularies (job states, priorities, error classes), job ids, durations, JSON depth, the
base of every settings class and the log settings, pydantic validation answered as Herald
answers bad input, and a Secret's data as text. Imports no other Herald package.
"""
